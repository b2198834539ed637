"""The ``aws`` driver: nodes are EC2 instances, through boto3.

The provider is configured as nodepool's aws driver is: ``region-name``
and optionally ``profile-name``; credentials (and an endpoint URL, if any)
come from the usual AWS places (environment, ``~/.aws/config`` and
``credentials``, instance roles) and never pass through fleetflow's layout,
database or logs. Images are named by the provider's ``cloud-images``
(an AMI id or image filters); labels pick one, with an instance type, a
key pair, the root volume's size and type, user data, tags, spot or
on-demand.

Every instance and its volumes carry fleetflow's tags (node id, pool,
provider, attempt). A create is crash safe twice over: the launch task
looks the node's instance up by tag before creating one, and
``RunInstances`` gets a ``ClientToken`` made from the provider, the node
and the attempt, so EC2 itself answers a repeated call with the instance
the first one made.

``list_instances`` is one paginated ``DescribeInstances`` filtered by the
provider's tag; every waiter reads it through the instance cache. boto3 is
told not to retry: throttling becomes a :class:`RateLimitError` whose wait
doubles while EC2 keeps refusing.
"""

import hashlib
import logging
import random
import re
import threading
import time

import voluptuous as v

from fleetflow.drivers import base
from fleetflow import exceptions
from fleetflow import layout
from fleetflow import ratelimit

LOG = logging.getLogger(__name__)

#: the pool label name, to find the label's username for a listed instance
META_LABEL = 'fleetflow-label'

RESOURCE_VOLUME = 'volume'

#: instances per page of a listing (EC2 allows 5 to 1000)
PAGE_SIZE = 1000
#: pages of one listing at most (a million instances at full pages)
MAX_PAGES = 1000
IMAGE_CACHE_TTL = 300
QUOTA_CACHE_TTL = 300
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
#: reads (describe, get) may be made this many times as fast as changes
READ_RATE_FACTOR = 10
#: EC2 takes 16 KiB of user data, and 50 tags of which fleetflow sets 6
MAX_USERDATA = 16 * 1024
MAX_LABEL_TAGS = 44

RATE_LIMIT_CODES = frozenset((
    'RequestLimitExceeded', 'Throttling', 'ThrottlingException',
    'ThrottledException', 'RequestThrottled', 'RequestThrottledException',
    'TooManyRequestsException', 'SlowDown', 'EC2ThrottledException'))
CAPACITY_CODES = frozenset((
    'InsufficientInstanceCapacity', 'InsufficientHostCapacity',
    'InsufficientReservedInstanceCapacity', 'InsufficientCapacity'))
QUOTA_CODES = frozenset((
    'InstanceLimitExceeded', 'VcpuLimitExceeded',
    'MaxSpotInstanceCountExceeded', 'VolumeLimitExceeded',
    'AddressLimitExceeded'))
ACCESS_DENIED_CODES = frozenset(('AccessDeniedException', 'AccessDenied'))
NOT_FOUND_CODES = frozenset((
    'InvalidInstanceID.NotFound', 'InvalidVolume.NotFound',
    'NoSuchResourceException'))

#: why EC2 ended an instance (its StateReason code), by fault kind
FAULT_KINDS = {
    'Server.InsufficientInstanceCapacity': 'capacity',
    'Server.SpotInstanceTermination': 'capacity',
    'Server.SpotInstanceShutdown': 'capacity',
    'Client.VolumeLimitExceeded': 'quota',
}
#: the StateReason of an instance someone terminated through the API
USER_SHUTDOWN = 'Client.UserInitiatedShutdown'
ENDED_STATES = ('shutting-down', 'terminated')

# The Service Quotas codes of EC2's vCPU limits (on-demand, spot), by the
# letters an instance type's family starts with. Standard covers A, C, D,
# H, I, M, R, T and Z.
_STANDARD = ('L-1216C47A', 'L-34B43A08')
VCPU_QUOTA_CODES = {
    **{letter: _STANDARD for letter in 'acdhimrtz'},
    'dl': ('L-6E869C2A', 'L-85EED4F7'),
    'f': ('L-74FC7D96', 'L-88CF9481'),
    'g': ('L-DB2E81BA', 'L-3819A6DF'),
    'vt': ('L-DB2E81BA', 'L-3819A6DF'),
    'inf': ('L-1945791B', 'L-B5D1601B'),
    'p': ('L-417A185B', 'L-7212CCBC'),
    'x': ('L-7295265B', 'L-E3A00192'),
    'trn': ('L-2C3B7624', 'L-6B0D517C'),
}

POSITIVE = v.All(int, v.Range(min=1))
NON_NEGATIVE = v.All(int, v.Range(min=0))
TAG_KEY = v.All(str, v.Length(min=1, max=128), v.Match(
    r'^(?!aws:|fleetflow-)',
    msg='tag keys starting with aws: or fleetflow- are not the layout\'s'))
NO_RESOURCE_LIMITS = layout.unsupported('max-servers, max-cores and '
                                        'max-ram apply')


class _OneOf(v.Any):
    """``Required(_OneOf(a, b))``: at least one of the keys; named nicely."""

    def __str__(self):
        return ' or '.join(str(key) for key in self.validators)

    __repr__ = __str__


#: a provider's ``cloud-images`` entry: an AMI and how its nodes are reached
CLOUD_IMAGE = {
    v.Required(_OneOf('image-id', 'image-filters'),
               msg='is required'): object,
    v.Required('name'): str,
    v.Required('username'): str,
    v.Exclusive('image-id', 'image'): str,
    v.Exclusive('image-filters', 'image'): [{
        v.Required(v.Any('name', 'Name')): str,
        v.Required(v.Any('values', 'Values')): [str]}],
    'connection-type': layout.CONNECTION_TYPE,
    'connection-port': layout.PORT,
    'python-path': str,
    'shell-type': str,
}
#: what a pool label takes from its cloud image unless it sets it itself
IMAGE_LABEL_KEYS = ('username', 'python-path', 'shell-type',
                    'connection-type', 'connection-port')


def client_token(provider, node_id, attempt):
    """The ``ClientToken`` of a node's launch attempt (64 characters)."""
    return hashlib.sha256(('%s\n%s\n%s' % (provider, node_id, attempt))
                          .encode('utf-8')).hexdigest()


def quota_code(instance_type, spot=False):
    """The Service Quotas code that limits this type's vCPUs, or None."""
    family = re.match(r'[a-z]*', instance_type or '').group()
    for end in range(len(family), 0, -1):
        codes = VCPU_QUOTA_CODES.get(family[:end])
        if codes:
            return codes[1 if spot else 0]
    return None


def _tags(item):
    """An EC2 resource's tags as a dict."""
    return {tag['Key']: tag['Value'] for tag in item.get('Tags') or ()}


def _error_details(exc):
    """(code, message, HTTP status) of a botocore error."""
    response = getattr(exc, 'response', None) or {}
    error = response.get('Error') or {}
    status = (response.get('ResponseMetadata') or {}).get('HTTPStatusCode')
    return error.get('Code'), error.get('Message') or str(exc), status


class AwsDriver(base.Driver):
    """Nodes as EC2 instances in one region.

    Provider keys: ``region-name``, ``profile-name``, ``cloud-images``,
    ``rate`` (requests per second, as in nodepool's aws driver),
    ``public-ipv4``, ``public-ipv6``, ``use-internal-ip``, ``max-servers``,
    ``max-cores``, ``max-ram``. Pool keys: ``subnet-id``,
    ``security-group-id``, ``availability-zone``, ``public-ipv4`` (or
    ``public-ip-address``), ``public-ipv6``, ``use-internal-ip``. Label
    keys: ``cloud-image``, ``instance-type``, ``key-name``,
    ``ebs-optimized``, ``volume-size``, ``volume-type``, ``iops``,
    ``throughput``, ``userdata``, ``iam-instance-profile``, ``tags``,
    ``use-spot``, ``imdsv2``.
    """

    provider_schema = {
        v.Required('region-name'): str,
        'profile-name': str,
        'cloud-images': [CLOUD_IMAGE],
        'public-ipv4': bool,
        'public-ipv6': bool,
        'use-internal-ip': bool,
        'max-servers': NON_NEGATIVE,
        'max-cores': NON_NEGATIVE,
        'max-ram': NON_NEGATIVE,
        'max-resources': NO_RESOURCE_LIMITS,
        'host-key-checking': layout.unsupported(
            'set host-key-checking on the pools'),
        'diskimages': layout.NO_BUILDER,
        'image-format': layout.NO_BUILDER,
        'image-import-timeout': layout.NO_BUILDER,
        'object-storage': layout.NO_BUILDER,
        'post-upload-hook': layout.NO_BUILDER,
    }
    pool_schema = {
        'subnet-id': str,
        'security-group-id': str,
        'availability-zone': str,
        'public-ipv4': bool,
        'public-ip-address': bool,
        'public-ipv6': bool,
        'use-internal-ip': bool,
        'max-resources': NO_RESOURCE_LIMITS,
    }
    label_schema = {
        v.Required('cloud-image'): str,
        v.Required('instance-type'): str,
        v.Required('key-name'): str,
        'ebs-optimized': bool,
        'volume-size': POSITIVE,
        'volume-type': str,
        'iops': POSITIVE,
        'throughput': POSITIVE,
        'userdata': v.All(str, v.Length(max=MAX_USERDATA)),
        'iam-instance-profile': v.All(
            {v.Exclusive('name', 'profile'): str,
             v.Exclusive('arn', 'profile'): str},
            v.Length(min=1, msg='needs name or arn')),
        'tags': v.All({TAG_KEY: v.All(v.Coerce(str), v.Length(max=256))},
                      v.Length(max=MAX_LABEL_TAGS)),
        'use-spot': bool,
        'imdsv2': v.Any(None, 'required', 'optional'),
        'diskimage': layout.NO_BUILDER,
        'fleet': layout.unsupported('it launches the one instance-type of '
                                    'a label'),
        'dedicated-host': layout.unsupported('it does not allocate '
                                             'dedicated hosts'),
        'dynamic-tags': layout.unsupported('it has no request variables to '
                                           'fill them from'),
    }

    @classmethod
    def complete_labels(cls, provider, pool):
        """Each label with its cloud image's username, port and so on.

        ``cloud-image`` names an entry of the provider's ``cloud-images``.
        """
        images = {image['name']: image
                  for image in provider.get('cloud-images', [])}
        problems = []
        labels = []
        for index, label in enumerate(pool['labels']):
            image = images.get(label['cloud-image'])
            if image is None:
                problems.append(v.Invalid(
                    'no cloud-image %r in the provider'
                    % label['cloud-image'],
                    ['labels', index, 'cloud-image']))
                continue
            labels.append({**{key: image[key] for key in IMAGE_LABEL_KEYS
                              if key in image}, **label})
        if problems:
            raise v.MultipleInvalid(problems)
        return labels

    def __init__(self, provider, conf):
        super().__init__(provider, conf)
        self.region_name = provider['region-name']
        self.profile_name = provider.get('profile-name')
        # as in nodepool's aws driver, ``rate`` is in requests per second
        # (not seconds between calls), and reads may go ten times as fast
        rate = provider.get('rate') or 0
        self.limiter = ratelimit.RateLimiter(1.0 / rate if rate else 0)
        self.read_limiter = ratelimit.RateLimiter(
            1.0 / (READ_RATE_FACTOR * rate) if rate else 0)
        self.page_size = PAGE_SIZE
        self._images = {image['name']: image
                        for image in provider.get('cloud-images', [])}
        self._pools = {pool['name']: pool
                       for pool in provider.get('pools', [])}
        self._lock = threading.Lock()
        self._clients = {}
        self._image_cache = {}
        self._type_cache = {}
        self._quota_cache = {}
        self._throttled = 0

    # -- connection ----------------------------------------------------------

    def start(self):
        try:
            self._client('ec2')
        except base.DriverError as e:
            raise exceptions.ConfigError(str(e))

    def stop(self):
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()

    def _client(self, service):
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                import boto3
                import botocore.config
                import botocore.exceptions
                config = botocore.config.Config(
                    retries={'total_max_attempts': 1, 'mode': 'standard'},
                    connect_timeout=10, read_timeout=60,
                    max_pool_connections=20)
                try:
                    session = boto3.session.Session(
                        profile_name=self.profile_name,
                        region_name=self.region_name)
                    client = session.client(service, config=config)
                except botocore.exceptions.BotoCoreError as e:
                    raise base.DriverError(
                        'provider %s: cannot use AWS profile %r: %s'
                        % (self.name, self.profile_name, e))
                self._clients[service] = client
            return client

    def _translate(self, exc, what):
        """Map a botocore error to the driver contract."""
        code, message, status = _error_details(exc)
        text = '%s: %s' % (what, message) if code is None else \
            '%s: %s: %s' % (what, code, message)
        if code in RATE_LIMIT_CODES or status == 429:
            with self._lock:
                self._throttled += 1
                backoff = min(BACKOFF_MAX,
                              BACKOFF_FIRST * 2 ** (self._throttled - 1))
            error = base.RateLimitError(
                text, retry_at=time.time() + backoff * random.uniform(1, 1.5))
        elif code in CAPACITY_CODES:
            error = base.CapacityError(text)
        elif code in QUOTA_CODES:
            error = base.QuotaError(text)
        elif code in NOT_FOUND_CODES:
            error = base.NotFound(text)
        else:
            error = base.DriverError(text)
        #: EC2's error code; None when there was no answer
        error.aws_code = code
        return error

    def _call(self, service, what, operation, **params):
        """One API call, rate limited, with errors translated."""
        import botocore.exceptions
        client = self._client(service)
        reading = operation.startswith(('describe_', 'get_'))
        with self.read_limiter if reading else self.limiter:
            try:
                result = getattr(client, operation)(**params)
            except (botocore.exceptions.BotoCoreError,
                    botocore.exceptions.ClientError) as e:
                error = self._translate(e, what)
                LOG.debug('Provider %s: %s', self.name, error)
                raise error from e
        with self._lock:
            self._throttled = 0
        return result

    def _pages(self, what, operation, key, **params):
        """Every item of a paginated EC2 listing, page after page."""
        items = []
        for _ in range(MAX_PAGES):
            page = self._call('ec2', what, operation, **params)
            items.extend(page.get(key) or ())
            token = page.get('NextToken')
            if not token:
                return items
            params['NextToken'] = token
        raise base.DriverError('provider %s: %s: more than %d pages'
                               % (self.name, what, MAX_PAGES))

    # -- lookups -------------------------------------------------------------

    def _image(self, cloud_image):
        """The AMI (DescribeImages' dict) a provider cloud-image names."""
        image = self._images[cloud_image]
        now = time.time()
        with self._lock:
            cached = self._image_cache.get(cloud_image)
        if cached and cached[1] > now:
            return cached[0]
        if image.get('image-id'):
            params = {'ImageIds': [image['image-id']]}
        else:
            params = {'Filters': [
                {'Name': f.get('name', f.get('Name')),
                 'Values': f.get('values', f.get('Values'))}
                for f in image['image-filters']]}
        found = self._call('ec2', 'find image %s' % cloud_image,
                           'describe_images', **params).get('Images') or []
        found = [i for i in found if i.get('State', 'available') ==
                 'available']
        if not found:
            raise base.DriverError('provider %s: no available image for '
                                   'cloud-image %r' % (self.name,
                                                       cloud_image))
        newest = max(found, key=lambda i: i.get('CreationDate') or '')
        with self._lock:
            self._image_cache[cloud_image] = (newest, now + IMAGE_CACHE_TTL)
        return newest

    def _instance_type(self, name):
        """(vCPUs, MiB of memory) of an instance type."""
        with self._lock:
            known = self._type_cache.get(name)
        if known is None:
            types = self._call('ec2', 'describe instance type %s' % name,
                               'describe_instance_types',
                               InstanceTypes=[name]).get('InstanceTypes')
            if not types:
                raise base.DriverError('provider %s: no instance type %r'
                                       % (self.name, name))
            known = (types[0]['VCpuInfo']['DefaultVCpus'],
                     types[0]['MemoryInfo']['SizeInMiB'])
            with self._lock:
                self._type_cache[name] = known
        return known

    def _pool_label(self, pool_name, label_name):
        pool = self._pools.get(pool_name) or {}
        for label in pool.get('labels', ()):
            if label['name'] == label_name:
                return label
        return {}

    def _owned_filter(self):
        """The EC2 filter of what carries this provider's tag."""
        return {'Name': 'tag:' + base.META_PROVIDER, 'Values': [self.name]}

    def _setting(self, pool, key, default):
        """A pool's setting, else the provider's, else the default."""
        if key == 'public-ipv4' and 'public-ip-address' in pool:
            return pool['public-ip-address']
        return pool.get(key, self.provider.get(key, default))

    # -- instances -----------------------------------------------------------

    def _instance(self, data):
        """The :class:`base.Instance` of DescribeInstances' dict, or None.

        None is an instance that is gone: terminated through the API.
        """
        tags = _tags(data)
        state_name = (data.get('State') or {}).get('Name')
        reason = data.get('StateReason') or {}
        fault = kind = None
        if state_name in ENDED_STATES and \
                reason.get('Code') in (None, USER_SHUTDOWN):
            if state_name == 'terminated':
                return None
            state = base.DELETING
        elif state_name == 'pending':
            state = base.BUILDING
        elif state_name == 'running':
            state = base.ACTIVE
        else:
            # ended by EC2 (capacity, a spot reclaim...), or stopped
            state = base.ERROR
            fault = '%s: %s' % (state_name, reason.get('Message') or
                                reason.get('Code') or 'no reason given')
            kind = FAULT_KINDS.get(reason.get('Code'))
        pool = self._pools.get(tags.get(base.META_POOL)) or {}
        label = self._pool_label(tags.get(base.META_POOL),
                                 tags.get(META_LABEL))
        public4 = data.get('PublicIpAddress')
        private4 = data.get('PrivateIpAddress')
        public6 = next((address['Ipv6Address']
                        for interface in data.get('NetworkInterfaces') or ()
                        for address in interface.get('Ipv6Addresses') or ()
                        if address.get('Ipv6Address')), None)
        if self._setting(pool, 'use-internal-ip', False):
            interface_ip = private4
        elif self._setting(pool, 'public-ipv6', False) and public6:
            interface_ip = public6
        else:
            interface_ip = public4 or private4
        return base.Instance.of_label(
            label,
            external_id=data['InstanceId'],
            state=state,
            metadata=tags,
            interface_ip=interface_ip,
            public_ipv4=public4,
            private_ipv4=private4,
            public_ipv6=public6,
            az=(data.get('Placement') or {}).get('AvailabilityZone'),
            region=self.region_name,
            fault=fault,
            fault_kind=kind,
        )

    def _describe(self, what, **params):
        reservations = self._pages(what, 'describe_instances',
                                   'Reservations', **params)
        return [data for reservation in reservations
                for data in reservation.get('Instances') or ()]

    def _get(self, external_id):
        """(DescribeInstances' dict, :class:`base.Instance`), or NotFound."""
        found = self._describe('get instance %s' % external_id,
                               InstanceIds=[external_id])
        instance = self._instance(found[0]) if found else None
        if instance is None:
            raise base.NotFound('get instance %s: not found' % external_id)
        return found[0], instance

    def create_instance(self, node_id, pool, label, metadata):
        image = self._image(label['cloud-image'])
        tags = {str(k): str(val) for k, val in
                (label.get('tags') or {}).items()}
        tags.update({str(k): str(val) for k, val in metadata.items()})
        tags[META_LABEL] = label['name']
        tags.setdefault('Name', '%s-%s-%s' % (label['name'], self.name,
                                              node_id))
        tag_list = [{'Key': key, 'Value': value}
                    for key, value in sorted(tags.items())]
        interface = {
            'DeviceIndex': 0,
            'AssociatePublicIpAddress': self._setting(pool, 'public-ipv4',
                                                      True),
        }
        if pool.get('subnet-id'):
            interface['SubnetId'] = pool['subnet-id']
        if pool.get('security-group-id'):
            interface['Groups'] = [pool['security-group-id']]
        if self._setting(pool, 'public-ipv6', False):
            interface['Ipv6AddressCount'] = 1
        ebs = {param: label[key] for key, param in (
            ('volume-size', 'VolumeSize'), ('volume-type', 'VolumeType'),
            ('iops', 'Iops'), ('throughput', 'Throughput')) if label.get(key)}
        params = {
            'ImageId': image['ImageId'],
            'InstanceType': label['instance-type'],
            'KeyName': label['key-name'],
            'MinCount': 1,
            'MaxCount': 1,
            'ClientToken': client_token(
                self.name, node_id, metadata.get(base.META_ATTEMPT, 1)),
            'EbsOptimized': label.get('ebs-optimized', False),
            'NetworkInterfaces': [interface],
            'TagSpecifications': [
                {'ResourceType': 'instance', 'Tags': tag_list},
                {'ResourceType': 'volume', 'Tags': tag_list}],
        }
        if ebs:
            # the image's root volume, resized or retyped
            params['BlockDeviceMappings'] = [{
                'DeviceName': image.get('RootDeviceName') or '/dev/sda1',
                'Ebs': dict(ebs, DeleteOnTermination=True)}]
        if pool.get('availability-zone'):
            params['Placement'] = {
                'AvailabilityZone': pool['availability-zone']}
        if label.get('userdata'):
            params['UserData'] = label['userdata']
        profile = label.get('iam-instance-profile')
        if profile:
            params['IamInstanceProfile'] = (
                {'Name': profile['name']} if 'name' in profile
                else {'Arn': profile['arn']})
        if label.get('use-spot'):
            params['InstanceMarketOptions'] = {
                'MarketType': 'spot',
                'SpotOptions': {'SpotInstanceType': 'one-time',
                                'InstanceInterruptionBehavior': 'terminate'}}
        if label.get('imdsv2'):
            params['MetadataOptions'] = {'HttpTokens': label['imdsv2'],
                                         'HttpEndpoint': 'enabled'}
        try:
            result = self._call('ec2', 'create instance for node %s'
                                % node_id, 'run_instances', **params)
        except base.DriverError:
            # the image may have been replaced: look it up again next time
            with self._lock:
                self._image_cache.pop(label['cloud-image'], None)
            raise
        data = result['Instances'][0]
        LOG.info('Provider %s: created instance %s for node %s', self.name,
                 data['InstanceId'], node_id)
        data.setdefault('Tags', tag_list)
        return self._instance(data)

    def list_instances(self):
        found = self._describe('list instances',
                               Filters=[self._owned_filter()],
                               MaxResults=self.page_size)
        return [instance for instance in map(self._instance, found)
                if instance is not None]

    def delete_instance(self, external_id):
        data, instance = self._get(external_id)
        if instance.state == base.ERROR and \
                data['State']['Name'] in ENDED_STATES:
            # EC2 ended it already; untagged, it leaves the listing
            self._call('ec2', 'untag instance %s' % external_id,
                       'delete_tags', Resources=[external_id],
                       Tags=[{'Key': base.META_PROVIDER}])
            LOG.info('Provider %s: instance %s was ended by EC2 (%s)',
                     self.name, external_id, instance.fault)
            return
        self._call('ec2', 'delete instance %s' % external_id,
                   'terminate_instances', InstanceIds=[external_id])
        LOG.info('Provider %s: deleting instance %s', self.name,
                 external_id)

    # -- leaked resources ----------------------------------------------------

    def list_resources(self):
        volumes = self._pages(
            'list volumes', 'describe_volumes', 'Volumes',
            Filters=[self._owned_filter(),
                     {'Name': 'status', 'Values': ['available']}],
            MaxResults=self.page_size)
        return [base.Resource(RESOURCE_VOLUME, volume['VolumeId'],
                              _tags(volume))
                for volume in volumes]

    def delete_resource(self, resource):
        if resource.resource_type != RESOURCE_VOLUME:
            raise base.DriverError('provider %s: unknown resource type %r'
                                   % (self.name, resource.resource_type))
        self._call('ec2', 'delete volume %s' % resource.resource_id,
                   'delete_volume', VolumeId=resource.resource_id)
        LOG.info('Provider %s: deleted volume %s', self.name,
                 resource.resource_id)

    # -- quota ---------------------------------------------------------------

    def _vcpu_limit(self, code):
        """The account's vCPU limit of a Service Quotas code (cached).

        None when the credentials may not read Service Quotas: EC2's own
        refusals (``VcpuLimitExceeded``) still hold launches back.
        """
        now = time.time()
        with self._lock:
            cached = self._quota_cache.get(code)
        if cached and cached[1] > now:
            return cached[0]
        what = 'get service quota ec2/%s' % code
        try:
            try:
                quota = self._call('service-quotas', what,
                                   'get_service_quota',
                                   ServiceCode='ec2', QuotaCode=code)
            except base.NotFound:
                # never changed for this account: the default applies
                quota = self._call('service-quotas', what,
                                   'get_aws_default_service_quota',
                                   ServiceCode='ec2', QuotaCode=code)
            value = int(quota['Quota']['Value'])
        except base.DriverError as e:
            if e.aws_code not in ACCESS_DENIED_CODES:
                raise
            LOG.warning('Provider %s: no vCPU limit from Service Quotas '
                        '(%s); EC2\'s refusals will tell', self.name, e)
            value = None
        with self._lock:
            self._quota_cache[code] = (value, now + QUOTA_CACHE_TTL)
        return value

    def _label_codes(self):
        return {quota_code(label['instance-type'], label.get('use-spot'))
                for pool in self._pools.values()
                for label in pool['labels']} - {None}

    def get_quota_limits(self):
        """The smallest vCPU limit the labels meet, minus unmanaged use.

        fleetflow's quota has one figure for cores: the tightest of the
        Service Quotas vCPU limits (on-demand or spot, by family) of this
        provider's instance types, less the vCPUs that instances not
        managed by this provider hold under that limit. ``max-servers``,
        ``max-cores`` and ``max-ram`` of the provider cap it further.
        """
        limits = {code: self._vcpu_limit(code)
                  for code in self._label_codes()}
        limits = {code: limit for code, limit in limits.items()
                  if limit is not None}
        cores = None
        if limits:
            used = self._unmanaged_vcpus()
            cores = min(max(0, limit - used.get(code, 0))
                        for code, limit in limits.items())
        return base.Quota(cores=cores).least(base.Quota(
            instances=self.provider.get('max-servers'),
            cores=self.provider.get('max-cores'),
            ram=self.provider.get('max-ram')))

    def _unmanaged_vcpus(self):
        """vCPUs of running instances that are not this provider's, by code."""
        used = {}
        for data in self._describe(
                'list all instances',
                Filters=[{'Name': 'instance-state-name',
                          'Values': ['pending', 'running']}],
                MaxResults=self.page_size):
            tags = _tags(data)
            if self.owned_metadata(tags):
                continue
            code = quota_code(data.get('InstanceType'),
                              data.get('InstanceLifecycle') == 'spot')
            if code is None:
                continue
            options = data.get('CpuOptions') or {}
            if options.get('CoreCount'):
                vcpus = options['CoreCount'] * options.get('ThreadsPerCore', 1)
            else:
                vcpus = self._instance_type(data['InstanceType'])[0]
            used[code] = used.get(code, 0) + vcpus
        return used

    def get_quota_for_label(self, pool, label):
        vcpus, ram = self._instance_type(label['instance-type'])
        return base.Quota(instances=1, cores=vcpus, ram=ram)
