"""The contract between fleetflow and the clouds it launches nodes in.

A driver adapts one kind of provider (a cloud, a set of hosts) to the calls
below. fleetflow loads a driver only through the ``fleetflow.drivers``
stevedore namespace; one driver object is made per provider in the layout
and shared by every flow and thread of the process, so its methods must be
thread safe.

Every instance a driver creates carries the metadata fleetflow gave it
(:data:`META_NODE_ID`, :data:`META_POOL`, :data:`META_PROVIDER`), and
``list_instances`` returns that metadata, so that a launch resumed after a
crash finds the instance it created before, and so that instances owned by
no node can be found and deleted as leaks.

Errors are typed: a missing instance is :class:`NotFound`; a cloud that
refuses for quota raises :class:`QuotaError` (not a failure: the node is
aborted and its request retried); :class:`RateLimitError` carries the
earliest time to call again; :class:`CapacityError` means the cloud has no
room for this label now (as quota, the node is aborted and its request
retried); anything else is a :class:`DriverError`.
"""

import abc
import dataclasses
import time

from fleetflow import exceptions

META_NODE_ID = 'fleetflow-node-id'
META_POOL = 'fleetflow-pool'
META_PROVIDER = 'fleetflow-provider'
#: the launch attempt (1, 2...) the instance was created for; a driver
#: whose cloud has idempotent creates makes its request token from it
META_ATTEMPT = 'fleetflow-attempt'

BUILDING = 'building'
ACTIVE = 'active'
ERROR = 'error'
DELETING = 'deleting'


class DriverError(exceptions.LaunchError):
    """A cloud call failed for a reason that is not one of the below."""

    stat_key = 'error.unknown'


class NotFound(DriverError):
    """The instance or resource does not exist (any more)."""


class QuotaError(DriverError):
    """The cloud refused the request because a quota is exhausted."""

    stat_key = 'error.quota'


class CapacityError(DriverError):
    """The cloud has no capacity for this label now."""

    stat_key = 'error.capacity'


class RateLimitError(DriverError):
    """The cloud asked to be called again later.

    :param retry_at: the earliest ``time.time()`` at which to call again.
    """

    def __init__(self, message, retry_at=None):
        super().__init__(message)
        self.retry_at = retry_at if retry_at is not None else time.time() + 1

    def __reduce__(self):
        return (self.__class__, (str(self), self.retry_at))


#: The error of a launch whose instance went to ERROR, by its fault kind.
FAULT_ERRORS = {'quota': QuotaError, 'capacity': CapacityError}


@dataclasses.dataclass
class Instance:
    """An instance as the cloud reports it.

    ``state`` is one of :data:`BUILDING`, :data:`ACTIVE`, :data:`ERROR`,
    :data:`DELETING`. ``fault`` holds the cloud's message for an instance in
    ERROR; ``fault_kind`` says what that fault was when the driver can
    tell: ``quota`` (a quota refusal) or ``capacity`` (no room for it),
    the keys of :data:`FAULT_ERRORS`.
    """

    external_id: str
    state: str
    metadata: dict = dataclasses.field(default_factory=dict)
    interface_ip: str = None
    public_ipv4: str = None
    private_ipv4: str = None
    public_ipv6: str = None
    connection_port: int = 22
    connection_type: str = 'ssh'
    username: str = None
    az: str = None
    region: str = None
    fault: str = None
    fault_kind: str = None
    host_keys: list = None
    #: ``host_keys`` are every key the host has: keyscan refuses any other
    host_keys_exact: bool = False

    @classmethod
    def of_label(cls, label, **fields):
        """An instance reached as its pool label says (port, type, user)."""
        return cls(connection_port=label.get('connection-port', 22),
                   connection_type=label.get('connection-type', 'ssh'),
                   username=label.get('username'), **fields)

    @property
    def node_id(self):
        return self.metadata.get(META_NODE_ID)

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Resource:
    """A cloud resource other than an instance, for leak cleanup."""

    resource_type: str
    resource_id: str
    metadata: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Quota:
    """Instances, cores and RAM (MiB); ``None`` means unlimited."""

    instances: int = None
    cores: int = None
    ram: int = None

    FIELDS = ('instances', 'cores', 'ram')

    def _combine(self, other, op):
        values = {}
        for field in self.FIELDS:
            mine, theirs = getattr(self, field), getattr(other, field)
            if mine is None or theirs is None:
                values[field] = mine if theirs is None else None
            else:
                values[field] = op(mine, theirs)
        return Quota(**values)

    def __add__(self, other):
        return self._combine(other, lambda a, b: a + b)

    def __sub__(self, other):
        return self._combine(other, lambda a, b: a - b)

    @classmethod
    def zero(cls):
        return cls(instances=0, cores=0, ram=0)

    def times(self, count):
        return Quota(**{f: None if getattr(self, f) is None
                        else getattr(self, f) * count for f in self.FIELDS})

    def least(self, other):
        """Field by field, the smaller limit (``None`` is unlimited)."""
        values = {}
        for field in self.FIELDS:
            mine, theirs = getattr(self, field), getattr(other, field)
            values[field] = (theirs if mine is None else mine
                             if theirs is None else min(mine, theirs))
        return Quota(**values)

    def fits(self, needed):
        """Whether ``needed`` fits in what this quota leaves."""
        return all(getattr(self, f) is None
                   or getattr(needed, f) is None
                   or getattr(needed, f) <= getattr(self, f)
                   for f in self.FIELDS)

    def to_dict(self):
        return {f: getattr(self, f) for f in self.FIELDS}


class Driver(abc.ABC):
    """One provider's adapter.

    :param provider: the provider's validated layout entry (a dict, with its
        ``pools`` and each pool's ``labels``).
    :param conf: the service's oslo.config object.

    Drivers extend the layout with their own keys through the voluptuous
    schema fragments below; the layout loader merges them with the common
    keys, so an unknown key is refused by name.
    """

    #: keys this driver accepts beside ``driver:`` in a provider entry
    provider_schema = {}
    #: keys this driver accepts in a pool entry
    pool_schema = {}
    #: keys this driver accepts in a pool's label entry
    label_schema = {}

    @classmethod
    def complete_labels(cls, provider, pool):
        """The pool's label entries, completed from the driver's own keys.

        Called by the layout loader with the checked provider and pool
        entries; a driver adds labels its pool serves without listing
        them, or values a label takes from elsewhere (an openstack cloud
        image). Raises ``voluptuous.Invalid`` (paths from the pool) for
        what its schema fragments cannot check.
        """
        return pool['labels']

    def __init__(self, provider, conf):
        self.provider = provider
        self.name = provider['name']
        self.conf = conf

    def start(self):
        """Start whatever background work the driver needs."""

    def stop(self):
        """Stop background work and release connections."""

    @abc.abstractmethod
    def create_instance(self, node_id, pool, label, metadata):
        """Start creating an instance and return it, usually BUILDING.

        :param node_id: the node this instance is for.
        :param pool: the pool's layout entry.
        :param label: the pool label's layout entry.
        :param metadata: the tags to set on it (node id, pool, provider,
            launch attempt).
        :returns: :class:`Instance`
        """

    @abc.abstractmethod
    def list_instances(self):
        """Return every instance of this provider, with its metadata."""

    @abc.abstractmethod
    def delete_instance(self, external_id):
        """Start deleting the instance; NotFound when it is gone already."""

    def list_resources(self):
        """Return the non-instance :class:`Resource` objects it manages."""
        return []

    def delete_resource(self, resource):
        """Delete a resource returned by :meth:`list_resources`."""
        raise NotImplementedError(self.__class__.__name__)

    def get_quota_limits(self):
        """Return the provider's total :class:`Quota`."""
        return Quota()

    def get_quota_for_label(self, pool, label):
        """Return the :class:`Quota` one node of this label takes."""
        return Quota(instances=1)

    def find_instance(self, node_id):
        """Return the instance tagged with ``node_id``, or None."""
        for instance in self.list_instances():
            if instance.node_id == node_id:
                return instance
        return None

    def owned_metadata(self, instance_metadata):
        """Whether metadata marks an instance as this provider's."""
        return instance_metadata.get(META_PROVIDER) == self.name
