"""The ``openstack`` driver: nodes are Nova servers, through openstacksdk.

The provider names an entry of the user's ``clouds.yaml`` (``cloud:``, and
optionally ``region-name:``); credentials stay in that file (or in the
environment openstacksdk reads) and never pass through fleetflow's layout,
database or logs.

Every server carries fleetflow's metadata (node id, pool, provider), which
is how ``list_instances`` and ``find_instance`` find it again after a
restart. A pool with ``auto-floating-ip`` gets, for each node, a Neutron
port on its first network and a floating IP bound to that port before the
server is booted on the port, so the server comes up with its public
address and nothing has to be attached later; the port and the floating IP
carry the node's metadata in their description, and their ids are in the
server's metadata so that deleting the server deletes them. Boot volumes
are made by Nova with ``delete_on_termination``; when a server is deleted
its volumes are tagged with its metadata first, so a volume Nova fails to
delete shows up in ``list_resources``.

openstacksdk is told not to retry on its own (no status code retries): a
429 or a 413 with ``Retry-After`` becomes a :class:`RateLimitError` that the
flow waits on, rather than a worker asleep inside the SDK.
"""

import base64
import email.utils
import ipaddress
import json
import logging
import random
import re
import threading
import time
import urllib.parse

import voluptuous as v

from fleetflow.drivers import base
from fleetflow import exceptions
from fleetflow import layout
from fleetflow import ratelimit

LOG = logging.getLogger(__name__)

#: the pool label name, to find the label's username for a listed server
#: server metadata keys fleetflow sets; instance-properties may set none
RESERVED_PREFIX = 'fleetflow-'
META_LABEL = 'fleetflow-label'
#: the Neutron port made for the server (auto-floating-ip pools)
META_PORT = 'fleetflow-port-id'
#: the floating IP made for the server (auto-floating-ip pools)
META_FIP = 'fleetflow-fip-id'
#: on a tagged boot volume: the server it booted
META_SERVER = 'fleetflow-server-id'

#: prefix of a Neutron description that holds fleetflow's metadata
DESCRIPTION_PREFIX = 'fleetflow:'

RESOURCE_FLOATING_IP = 'floatingip'
RESOURCE_PORT = 'port'
RESOURCE_VOLUME = 'volume'

DEFAULT_VOLUME_SIZE = 50
IMAGE_CACHE_TTL = 300
FLAVOR_CACHE_TTL = 3600
FLAVOR_REFRESH_MIN = 60
#: the compute microversion fleetflow reads servers with (or the cloud's
#: highest below it): 2.47 embeds the flavor's vcpus and ram in a server
COMPUTE_MICROVERSION = '2.47'

# Quota refusals as Nova, Neutron and Cinder word them, e.g.
# "Quota exceeded for cores: Requested 2, but already used 20 of 20 cores",
# "Quota exceeded for resources: ['port'].", "Maximum number of ports
# exceeded", "VolumeLimitExceeded: Maximum number of volumes allowed (10)
# exceeded for quota 'volumes'.", "Requested volume or snapshot exceeds
# allowed gigabytes quota."
QUOTA_RE = re.compile(
    r'quota|maximum number of \w+(?: allowed)?(?: \(\d+\))? exceeded|'
    r'\b(?:instance|core|ram|port|volume|floating ?ip)s? limit exceeded',
    re.IGNORECASE)
CAPACITY_RE = re.compile(r'no valid host was found', re.IGNORECASE)

PRIVATE_V4 = tuple(ipaddress.ip_network(n) for n in (
    '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10',
    '169.254.0.0/16', '127.0.0.0/8'))
PRIVATE_V6 = tuple(ipaddress.ip_network(n) for n in (
    'fc00::/7', 'fe80::/10', '::1/128'))

# openstacksdk retries 429/503 answers itself when told to (and does so by
# default for the image service); fleetflow wants them as RateLimitError.
NO_RETRIES = {
    'status_code_retries': 0,
    'compute_status_code_retries': 0,
    'image_status_code_retries': 0,
    'network_status_code_retries': 0,
    'block_storage_status_code_retries': 0,
    'volume_status_code_retries': 0,
}


POSITIVE = v.All(int, v.Range(min=1))

#: a provider's ``cloud-images`` entry: an image of the cloud and how its
#: nodes are reached
CLOUD_IMAGE = {
    v.Required('name'): str,
    v.Exclusive('image-id', 'image'): str,
    v.Exclusive('image-name', 'image'): str,
    'config-drive': bool,
    'username': str,
    'python-path': str,
    'shell-type': str,
    'connection-type': layout.CONNECTION_TYPE,
    'connection-port': layout.PORT,
}
#: what a pool label takes from its cloud image unless it sets it itself
IMAGE_LABEL_KEYS = ('config-drive', 'username', 'python-path', 'shell-type',
                    'connection-type', 'connection-port')
NO_VOLUME_LIMITS = layout.unsupported('it does not count volumes: '
                                      'max-servers, max-cores and max-ram '
                                      'apply')


def fault_kind(*messages):
    """``quota`` or ``capacity`` when a cloud's message says so, else None.

    Nova's scheduler answers "No valid host was found" when no compute
    host has room for the flavor.
    """
    for kind, pattern in (('quota', QUOTA_RE), ('capacity', CAPACITY_RE)):
        if any(message and pattern.search(message) for message in messages):
            return kind
    return None


def _retry_at(value, now):
    """The time a ``Retry-After`` header value points at."""
    try:
        return now + max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return now + 1


def _http_details(exc):
    """(status, message, headers) of an openstacksdk/keystoneauth error."""
    status = getattr(exc, 'status_code', None)
    if status is None:
        status = getattr(exc, 'http_status', None)
    response = getattr(exc, 'response', None)
    headers = {}
    if response is not None and getattr(response, 'headers', None):
        headers = response.headers
    message = getattr(exc, 'details', None) or getattr(exc, 'message', None)
    if not message or not isinstance(message, str):
        message = str(exc)
    return status, message.strip(), headers


def translate_error(exc, what):
    """Map an openstacksdk or keystoneauth error to the driver contract."""
    status, message, headers = _http_details(exc)
    text = '%s: %s' % (what, message) if status is None else \
        '%s: %s %s' % (what, status, message)
    retry_after = headers.get('Retry-After') if headers else None
    if status == 429 or (status == 413 and retry_after):
        error = base.RateLimitError(
            text, retry_at=_retry_at(retry_after, time.time())
            if retry_after else None)
    elif status is not None and 400 <= status < 500 and \
            fault_kind(message) == 'quota':
        error = base.QuotaError(text)
    elif status is not None and fault_kind(message) == 'capacity':
        error = base.CapacityError(text)
    elif status == 404:
        error = base.NotFound(text)
    else:
        error = base.DriverError(text)
    #: the HTTP status of the cloud's answer; None when there was none
    error.http_status = status
    return error


def _cloud_errors():
    """The errors a call through openstacksdk raises for a cloud's answer."""
    import keystoneauth1.exceptions
    import openstack.exceptions
    import requests
    return (openstack.exceptions.SDKException,
            keystoneauth1.exceptions.ClientException,
            requests.RequestException, OSError)


def _tag(metadata):
    """A Neutron description carrying fleetflow's metadata."""
    return DESCRIPTION_PREFIX + json.dumps(metadata, sort_keys=True,
                                           separators=(',', ':'))


def _untag(description):
    """The metadata in a description made by :func:`_tag`, or None."""
    if not description or not description.startswith(DESCRIPTION_PREFIX):
        return None
    try:
        metadata = json.loads(description[len(DESCRIPTION_PREFIX):])
    except ValueError:
        return None
    return metadata if isinstance(metadata, dict) else None


def _sanitize_name(name):
    return re.sub(r'[^A-Za-z0-9.-]+', '-', name).strip('-')[:63] or 'node'


def _classify_addresses(addresses):
    """Nova's ``addresses`` -> (public v4, private v4, public v6)."""
    floating4 = public4 = private4 = public6 = None
    for entries in (addresses or {}).values():
        for entry in entries or ():
            try:
                address = ipaddress.ip_address(entry.get('addr'))
            except ValueError:
                continue
            kind = entry.get('OS-EXT-IPS:type')
            if address.version == 4:
                if kind == 'floating':
                    floating4 = floating4 or str(address)
                elif any(address in net for net in PRIVATE_V4):
                    private4 = private4 or str(address)
                else:
                    public4 = public4 or str(address)
            elif not any(address in net for net in PRIVATE_V6):
                public6 = public6 or str(address)
    # A server on a provider network with routable addresses has no
    # private address: its one fixed address serves as both.
    return floating4 or public4, private4 or public4, public6


def _server_state(server):
    status = (server.get('status') or '').upper()
    if status in ('DELETED', 'SOFT_DELETED') or \
            server.get('OS-EXT-STS:task_state') == 'deleting':
        return base.DELETING
    if status == 'ERROR':
        return base.ERROR
    if status == 'ACTIVE':
        return base.ACTIVE
    return base.BUILDING


class OpenStackDriver(base.Driver):
    """Nodes as Nova servers in one cloud region.

    nodepool's openstack keys, but those of its image builder. Provider
    keys: ``cloud`` (a clouds.yaml entry), ``region-name``,
    ``cloud-images``. Pool keys: ``networks``, ``security-groups``,
    ``availability-zones``, ``auto-floating-ip``, ``floating-ip-network``,
    ``use-internal-ip``. Label keys:
    ``flavor-name`` and/or ``min-ram``, ``cloud-image``, ``key-name``,
    ``userdata``, ``boot-from-volume``, ``volume-size``, ``networks``,
    ``instance-properties``.
    """

    provider_schema = {
        v.Required('cloud'): str,
        'region-name': str,
        'cloud-images': [CLOUD_IMAGE],
        'nodepool-id': layout.IGNORED,
        'clean-floating-ips': layout.IGNORED,
        'port-cleanup-interval': layout.IGNORED,
        'diskimages': layout.NO_BUILDER,
        'image-upload-timeout': layout.NO_BUILDER,
        'image-name-format': layout.NO_BUILDER,
        'post-upload-hook': layout.NO_BUILDER,
    }
    pool_schema = {
        'networks': [str],
        'security-groups': [str],
        'availability-zones': [str],
        'auto-floating-ip': bool,
        'floating-ip-network': str,
        'use-internal-ip': bool,
        'max-volumes': NO_VOLUME_LIMITS,
        'max-volume-gb': NO_VOLUME_LIMITS,
    }
    label_schema = {
        'flavor-name': str,
        'min-ram': POSITIVE,
        'cloud-image': str,
        'diskimage': layout.NO_BUILDER,
        'key-name': str,
        'userdata': str,
        'boot-from-volume': bool,
        'volume-size': POSITIVE,
        'networks': [str],
        'instance-properties': {str: v.Coerce(str)},
        'dynamic-instance-properties': layout.unsupported(
            'it has no request variables to fill them from'),
        'console-log': layout.IGNORED,
    }

    @classmethod
    def complete_labels(cls, provider, pool):
        """Each label with its cloud image's values, ``image`` and networks.

        ``cloud-image`` names an entry of the provider's ``cloud-images``;
        a name none of them has is the cloud's image name or id.
        """
        images = {image['name']: image
                  for image in provider.get('cloud-images', [])}
        problems = []
        labels = []
        for index, label in enumerate(pool['labels']):
            where = ['labels', index]
            if 'flavor-name' not in label and 'min-ram' not in label:
                problems.append(v.Invalid('flavor-name or min-ram is '
                                          'required', where))
            if 'cloud-image' not in label:
                problems.append(v.Invalid('is required',
                                          where + ['cloud-image']))
                continue
            image = images.get(label['cloud-image'], {})
            labels.append({
                **{key: image[key] for key in IMAGE_LABEL_KEYS
                   if key in image},
                'image': (image.get('image-id') or image.get('image-name')
                          or label['cloud-image']),
                'networks': pool.get('networks', []),
                **label})
        if problems:
            raise v.MultipleInvalid(problems)
        return labels

    def __init__(self, provider, conf):
        super().__init__(provider, conf)
        self.cloud = provider['cloud']
        self.region_name = provider.get('region-name')
        self.limiter = ratelimit.RateLimiter(provider.get('rate', 0))
        self._pools = {pool['name']: pool
                       for pool in provider.get('pools', [])}
        for pool in self._pools.values():
            if pool.get('auto-floating-ip') and not pool.get('networks'):
                raise exceptions.ConfigError(
                    'provider %s pool %s: auto-floating-ip needs networks'
                    % (self.name, pool['name']))
            for label in pool.get('labels', []):
                reserved = sorted(
                    key for key in label.get('instance-properties') or {}
                    if str(key).startswith(RESERVED_PREFIX))
                if reserved:
                    raise exceptions.ConfigError(
                        'provider %s pool %s label %s: instance-properties '
                        'may not set %s: keys starting with %r are '
                        'fleetflow\'s' % (self.name, pool['name'],
                                          label['name'], ', '.join(reserved),
                                          RESERVED_PREFIX))
        self._lock = threading.Lock()
        self._conn = None
        self._region = self.region_name
        self._flavors = None
        self._flavors_at = 0.0
        self._images = {}
        self._networks = {}
        self._label_quota = {}
        self._microversion = None

    # -- connection ----------------------------------------------------------

    def start(self):
        try:
            self._connection()
        except base.DriverError as e:
            raise exceptions.ConfigError(str(e))

    def stop(self):
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                LOG.debug('Closing the connection to cloud %s failed',
                          self.cloud, exc_info=True)

    def _connection(self):
        with self._lock:
            if self._conn is None:
                import openstack
                kwargs = dict(NO_RETRIES)
                if self.region_name:
                    kwargs['region_name'] = self.region_name
                try:
                    self._conn = openstack.connect(cloud=self.cloud,
                                                   **kwargs)
                except Exception as e:
                    raise base.DriverError(
                        'provider %s: cannot use cloud %r from clouds.yaml: '
                        '%s' % (self.name, self.cloud, e))
                self._region = (self._conn.config.get_region_name()
                                or self.region_name)
                LOG.info('Provider %s uses cloud %s, region %s', self.name,
                         self.cloud, self._region or '(default)')
            return self._conn

    def _call(self, what, func, *args, **kwargs):
        """Call the cloud once, rate limited, with errors translated."""
        conn = self._connection()
        with self.limiter:
            try:
                return func(conn, *args, **kwargs)
            except base.DriverError:
                raise
            except _cloud_errors() as e:
                error = translate_error(e, what)
                LOG.debug('Provider %s: %s', self.name, error)
                raise error from e

    # -- lookups -------------------------------------------------------------

    def _flavor_list(self, refresh=False):
        with self._lock:
            flavors, listed = self._flavors, self._flavors_at
        now = time.time()
        stale = now - listed > FLAVOR_CACHE_TTL
        may_refresh = now - listed > FLAVOR_REFRESH_MIN
        if flavors is None or stale or (refresh and may_refresh):
            flavors = self._call(
                'list flavors',
                lambda c: [f for f in c.compute.flavors(details=True)
                           if not f.is_disabled])
            with self._lock:
                self._flavors, self._flavors_at = flavors, now
        return flavors

    def _find_flavor(self, label):
        name = label.get('flavor-name')
        min_ram = label.get('min-ram')
        for refresh in (False, True):
            flavors = self._flavor_list(refresh=refresh)
            if min_ram:
                fitting = [f for f in flavors if f.ram >= min_ram and
                           (not name or name in (f.name or ''))]
                fitting.sort(key=lambda f: (f.ram, f.vcpus, f.name or ''))
                if fitting:
                    return fitting[0]
            else:
                for flavor in flavors:
                    if name in (flavor.name, flavor.id):
                        return flavor
        if min_ram:
            wanted = 'with at least %d MiB of RAM' % min_ram
            if name:
                wanted += ' and %r in its name' % name
        else:
            wanted = 'named %r' % name
        raise base.DriverError('provider %s: no flavor %s'
                               % (self.name, wanted))

    def _flavor_by_id(self, flavor_id):
        for flavor in self._flavor_list():
            if flavor.id == flavor_id:
                return flavor
        return None

    def _image_id(self, name_or_id):
        now = time.time()
        with self._lock:
            cached = self._images.get(name_or_id)
        if cached and cached[1] > now:
            return cached[0]
        image = self._call(
            'find image %s' % name_or_id,
            lambda c: c.image.find_image(name_or_id, ignore_missing=True))
        if image is None:
            raise base.DriverError('provider %s: no image %r'
                                   % (self.name, name_or_id))
        with self._lock:
            self._images[name_or_id] = (image.id, now + IMAGE_CACHE_TTL)
        return image.id

    def _network_id(self, name_or_id):
        with self._lock:
            cached = self._networks.get(name_or_id)
        if cached:
            return cached
        network = self._call(
            'find network %s' % name_or_id,
            lambda c: c.network.find_network(name_or_id,
                                             ignore_missing=True))
        if network is None:
            raise base.DriverError('provider %s: no network %r'
                                   % (self.name, name_or_id))
        with self._lock:
            self._networks[name_or_id] = network.id
        return network.id

    def _external_network_id(self, pool):
        name = pool.get('floating-ip-network')
        if name:
            return self._network_id(name)
        key = ('external', None)
        with self._lock:
            cached = self._networks.get(key)
        if cached:
            return cached
        external = self._call(
            'list external networks',
            lambda c: list(c.network.networks(is_router_external=True)))
        if len(external) != 1:
            raise base.DriverError(
                'provider %s pool %s: %d external networks, set '
                'floating-ip-network' % (self.name, pool['name'],
                                         len(external)))
        with self._lock:
            self._networks[key] = external[0].id
        return external[0].id

    def _pool_label(self, pool_name, label_name):
        pool = self._pools.get(pool_name) or {}
        for label in pool.get('labels', ()):
            if label['name'] == label_name:
                return label
        return {}

    # -- instances -----------------------------------------------------------

    def _instance(self, server):
        """The :class:`base.Instance` of a server (Nova's JSON, a dict)."""
        metadata = dict(server.get('metadata') or {})
        pool = self._pools.get(metadata.get(base.META_POOL)) or {}
        label = self._pool_label(metadata.get(base.META_POOL),
                                 metadata.get(META_LABEL))
        public4, private4, public6 = _classify_addresses(
            server.get('addresses'))
        if pool.get('use-internal-ip'):
            interface_ip = private4
        else:
            interface_ip = public4 or public6 or private4
        state = _server_state(server)
        fault = kind = None
        if state == base.ERROR:
            fault_info = server.get('fault') or {}
            fault = fault_info.get('message') or 'server is in ERROR'
            kind = fault_kind(fault, fault_info.get('details'))
        return base.Instance.of_label(
            label,
            external_id=server['id'],
            state=state,
            metadata=metadata,
            interface_ip=interface_ip,
            public_ipv4=public4,
            private_ipv4=private4,
            public_ipv6=public6,
            az=server.get('OS-EXT-AZ:availability_zone') or None,
            region=self._region,
            fault=fault,
            fault_kind=kind,
        )

    def create_instance(self, node_id, pool, label, metadata):
        flavor = self._find_flavor(label)
        image_id = self._image_id(label['image'])
        server_meta = {str(k): str(val) for k, val in
                       (label.get('instance-properties') or {}).items()}
        server_meta.update({str(k): str(val) for k, val in metadata.items()})
        server_meta[META_LABEL] = label['name']
        name = _sanitize_name('%s-%s-%s' % (label['name'], self.name,
                                            node_id))
        attrs = {'name': name, 'flavor_id': flavor.id}
        networks = [{'uuid': self._network_id(net)}
                    for net in label['networks']]
        port = fip = None
        if pool.get('auto-floating-ip'):
            port, fip = self._port_with_floating_ip(
                pool, name, networks[0]['uuid'], metadata)
            networks[0] = {'port': port.id}
            server_meta[META_PORT] = port.id
            server_meta[META_FIP] = fip.id
        attrs['networks'] = networks or 'auto'
        attrs['metadata'] = server_meta
        if pool.get('security-groups'):
            attrs['security_groups'] = [
                {'name': group} for group in pool['security-groups']]
        if label.get('config-drive') is not None:
            attrs['config_drive'] = label['config-drive']
        zones = pool.get('availability-zones')
        if zones:
            attrs['availability_zone'] = random.choice(zones)
        if label.get('key-name'):
            attrs['key_name'] = label['key-name']
        if label.get('userdata'):
            attrs['user_data'] = base64.b64encode(
                label['userdata'].encode('utf-8')).decode('ascii')
        if label.get('boot-from-volume'):
            attrs['block_device_mapping'] = [{
                'boot_index': 0,
                'uuid': image_id,
                'source_type': 'image',
                'destination_type': 'volume',
                'volume_size': label.get('volume-size', DEFAULT_VOLUME_SIZE),
                'delete_on_termination': True,
            }]
        else:
            attrs['image_id'] = image_id
        try:
            server = self._call('create server %s' % name,
                                lambda c: c.compute.create_server(**attrs))
        except base.DriverError as e:
            # a refusal created nothing: undo the port; after no answer at
            # all the server may exist on it, and leak cleanup will decide
            if port is not None and getattr(e, 'http_status', None):
                self._delete_quietly(RESOURCE_FLOATING_IP, fip.id)
                self._delete_quietly(RESOURCE_PORT, port.id)
            if not isinstance(e, (base.QuotaError, base.RateLimitError)):
                # the image may have been replaced under its name: look
                # it up again on the next attempt
                with self._lock:
                    self._images.pop(label['image'], None)
            raise
        LOG.info('Provider %s: created server %s (%s) for node %s',
                 self.name, name, server.id, node_id)
        return self._instance({
            'id': server.id, 'status': 'BUILD', 'metadata': server_meta,
            'OS-EXT-AZ:availability_zone': attrs.get('availability_zone')})

    def _port_with_floating_ip(self, pool, name, network_id, metadata):
        """The node's port and floating IP, made now or by an earlier try."""
        tags = {key: str(metadata[key]) for key in (
            base.META_NODE_ID, base.META_POOL, base.META_PROVIDER)
            if key in metadata}
        ports = self._call('find port %s' % name,
                           lambda c: list(c.network.ports(name=name)))
        ports = [p for p in ports if not p.device_id]
        if ports:
            port = ports[0]
        else:
            port = self._call('create port %s' % name,
                              lambda c: c.network.create_port(
                                  name=name, network_id=network_id,
                                  description=_tag(tags)))
        try:
            fips = self._call('find floating ip of port %s' % port.id,
                              lambda c: list(c.network.ips(
                                  port_id=port.id)))
            if fips:
                return port, fips[0]
            external_id = self._external_network_id(pool)
            fip = self._call('create floating ip',
                             lambda c: c.network.create_ip(
                                 floating_network_id=external_id,
                                 port_id=port.id, description=_tag(tags)))
        except base.DriverError:
            self._delete_quietly(RESOURCE_PORT, port.id)
            raise
        return port, fip

    # Polling reads Nova's JSON directly: building openstacksdk resources
    # costs milliseconds per server, which a listing of a thousand servers
    # every few seconds cannot afford.

    def _compute_microversion(self, conn):
        with self._lock:
            if self._microversion is not None:
                return self._microversion or None
        from openstack import utils
        version = utils.maximum_supported_microversion(
            conn.compute, COMPUTE_MICROVERSION)
        with self._lock:
            self._microversion = version or ''
        return version

    def _compute_get(self, conn, url):
        from openstack import exceptions as sdk_exceptions
        response = conn.compute.get(
            url, microversion=self._compute_microversion(conn),
            raise_exc=False, skip_cache=True)
        sdk_exceptions.raise_from_response(response)
        return response.json()

    def _get_server(self, external_id):
        return self._call(
            'get server %s' % external_id,
            lambda c: self._compute_get(
                c, '/servers/%s' % urllib.parse.quote(str(external_id),
                                                      safe=''))['server'])

    def _servers(self):
        """Every server of the project, following Nova's pages."""
        def list_servers(conn):
            servers, url = [], '/servers/detail'
            while url:
                if servers:
                    self.limiter.wait()
                page = self._compute_get(conn, url)
                servers.extend(page.get('servers') or ())
                url = next((link['href'] for link in
                            page.get('servers_links') or ()
                            if link.get('rel') == 'next'), None)
            return servers
        return self._call('list servers', list_servers)

    def list_instances(self):
        return [self._instance(server) for server in self._servers()
                if self.owned_metadata(server.get('metadata') or {})]

    def delete_instance(self, external_id):
        server = self._get_server(external_id)
        metadata = dict(server.get('metadata') or {})
        if self.owned_metadata(metadata):
            self._tag_boot_volumes(server, metadata)
        self._call('delete server %s' % external_id,
                   lambda c: c.compute.delete_server(external_id,
                                                     ignore_missing=False))
        LOG.info('Provider %s: deleting server %s', self.name, external_id)
        if metadata.get(META_FIP):
            self._delete_node_resource(RESOURCE_FLOATING_IP,
                                       metadata[META_FIP], server)
        if metadata.get(META_PORT):
            self._delete_node_resource(RESOURCE_PORT, metadata[META_PORT],
                                       server)

    def _delete_node_resource(self, resource_type, resource_id, server):
        """Delete the port or floating IP a server's metadata names.

        Only if the resource's own tag says it is this provider's, made for
        the server's node: server metadata is not proof enough.
        """
        getters = {RESOURCE_FLOATING_IP: lambda c: c.network.get_ip(
                       resource_id),
                   RESOURCE_PORT: lambda c: c.network.get_port(resource_id)}
        try:
            resource = self._call('get %s %s' % (resource_type, resource_id),
                                  getters[resource_type])
        except base.NotFound:
            return
        except base.DriverError as e:
            LOG.warning('Provider %s: cannot look at %s %s now (leak cleanup '
                        'will): %s', self.name, resource_type, resource_id,
                        e)
            return
        tags = _untag(resource.description) or {}
        node_id = (server.get('metadata') or {}).get(base.META_NODE_ID)
        if not self.owned_metadata(tags) or node_id is None or \
                tags.get(base.META_NODE_ID) != node_id:
            LOG.error('SECURITY: provider %s: server %s names %s %s in its '
                      'metadata, which is not tagged as made for its node '
                      '%s; not deleting it', self.name, server['id'],
                      resource_type, resource_id, node_id)
            return
        self._delete_quietly(resource_type, resource_id)

    def _tag_boot_volumes(self, server, metadata):
        """Mark the volumes Nova should delete with the server as ours.

        Should Nova leave one behind, ``list_resources`` reports it with
        the node's metadata and the launcher deletes it as a leak.
        """
        tags = {key: metadata[key] for key in (
            base.META_NODE_ID, base.META_POOL, base.META_PROVIDER)
            if key in metadata}
        tags[META_SERVER] = server['id']
        for attached in server.get('os-extended-volumes:volumes_attached') \
                or ():
            if attached.get('delete_on_termination') is False:
                continue
            volume_id = attached.get('id')
            try:
                self._call('tag volume %s' % volume_id,
                           lambda c: c.block_storage.set_volume_metadata(
                               volume_id, **tags))
            except base.DriverError as e:
                LOG.warning('Provider %s: cannot tag boot volume %s of '
                            'server %s: %s', self.name, volume_id,
                            server['id'], e)

    # -- leaked resources ----------------------------------------------------

    def list_resources(self):
        resources = []
        for fip in self._call('list floating ips',
                              lambda c: list(c.network.ips())):
            metadata = _untag(fip.description)
            if metadata is not None and self.owned_metadata(metadata):
                resources.append(base.Resource(RESOURCE_FLOATING_IP, fip.id,
                                               metadata))
        for port in self._call('list ports',
                               lambda c: list(c.network.ports())):
            metadata = _untag(port.description)
            if metadata is not None and self.owned_metadata(metadata):
                resources.append(base.Resource(RESOURCE_PORT, port.id,
                                               metadata))
        if self._connection().has_service('block-storage'):
            for volume in self._call(
                    'list volumes',
                    lambda c: list(c.block_storage.volumes(details=True))):
                metadata = dict(volume.metadata or {})
                if self.owned_metadata(metadata):
                    resources.append(base.Resource(RESOURCE_VOLUME,
                                                   volume.id, metadata))
        return resources

    def delete_resource(self, resource):
        deleters = {
            RESOURCE_FLOATING_IP: lambda c, rid: c.network.delete_ip(
                rid, ignore_missing=False),
            RESOURCE_PORT: lambda c, rid: c.network.delete_port(
                rid, ignore_missing=False),
            RESOURCE_VOLUME: lambda c, rid: c.block_storage.delete_volume(
                rid, ignore_missing=False),
        }
        deleter = deleters.get(resource.resource_type)
        if deleter is None:
            raise base.DriverError('provider %s: unknown resource type %r'
                                   % (self.name, resource.resource_type))
        self._call('delete %s %s' % (resource.resource_type,
                                     resource.resource_id),
                   deleter, resource.resource_id)
        LOG.info('Provider %s: deleted %s %s', self.name,
                 resource.resource_type, resource.resource_id)

    def _delete_quietly(self, resource_type, resource_id):
        try:
            self.delete_resource(base.Resource(resource_type, resource_id))
        except base.NotFound:
            pass
        except base.DriverError as e:
            LOG.warning('Provider %s: cannot delete %s %s now (leak cleanup '
                        'will): %s', self.name, resource_type, resource_id,
                        e)

    # -- quota ---------------------------------------------------------------

    def get_quota_limits(self):
        limits = self._call('get limits',
                            lambda c: c.compute.get_limits()).absolute

        def limit(value):
            return None if value is None or value < 0 else value

        total = base.Quota(instances=limit(limits.instances),
                           cores=limit(limits.total_cores),
                           ram=limit(limits.total_ram))
        return total - self._unmanaged_usage()

    def _unmanaged_usage(self):
        """What servers that are not this provider's use."""
        instances = cores = ram = 0
        for server in self._servers():
            if self.owned_metadata(server.get('metadata') or {}):
                continue
            instances += 1
            flavor = server.get('flavor') or {}
            vcpus = flavor.get('vcpus')
            mem = flavor.get('ram')
            if vcpus is None or mem is None:
                # before microversion 2.47 Nova gives only the flavor's id
                known = self._flavor_by_id(flavor.get('id'))
                vcpus = known.vcpus if known else 0
                mem = known.ram if known else 0
            cores += vcpus or 0
            ram += mem or 0
        return base.Quota(instances=instances, cores=cores, ram=ram)

    def get_quota_for_label(self, pool, label):
        key = (pool['name'], label['name'])
        with self._lock:
            quota = self._label_quota.get(key)
        if quota is None:
            flavor = self._find_flavor(label)
            quota = base.Quota(instances=1, cores=flavor.vcpus,
                               ram=flavor.ram)
            with self._lock:
                self._label_quota[key] = quota
        return base.Quota(**quota.to_dict())
