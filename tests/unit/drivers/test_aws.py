"""The aws driver's layout, tokens, quota codes, states and error mapping.

No cloud here: EC2's answers are the dicts (and botocore errors) boto3
would give. The driver against moto is in tests/functional/test_aws.py.
"""

import os
import time

from botocore import exceptions as boto_exceptions
import fixtures
import testtools
import yaml

from fleetflow.drivers import aws
from fleetflow.drivers import base
from fleetflow import exceptions
from fleetflow import layout as ff_layout

# A layout as nodepool's aws driver takes it.
NODEPOOL_LAYOUT = """
labels:
  - name: ubuntu-jammy
    min-ready: 1
  - name: ubuntu-jammy-arm
  - name: big-spot
providers:
  - name: ec2-us-east-2
    driver: aws
    region-name: us-east-2
    profile-name: ci
    rate: 2
    launch-retries: 3
    boot-timeout: 180
    max-servers: 40
    cloud-images:
      - name: jammy
        image-filters:
          - name: name
            values: [ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-*]
          - Name: owner-id
            Values: ['099720109477']
        username: ubuntu
        python-path: /usr/bin/python3
      - name: jammy-arm
        image-id: ami-0123456789abcdef0
        username: ubuntu
        connection-type: ssh
        connection-port: 22
    pools:
      - name: main
        max-servers: 30
        subnet-id: subnet-0123456789abcdef0
        security-group-id: sg-0123456789abcdef0
        public-ip-address: true
        host-key-checking: true
        labels:
          - name: ubuntu-jammy
            cloud-image: jammy
            instance-type: t3.large
            key-name: zuul
            volume-type: gp3
            volume-size: 80
            iops: 3000
            throughput: 125
            ebs-optimized: true
            userdata: |
              #cloud-config
            iam-instance-profile:
              name: ci-node
            tags:
              team: infra
              cost-center: 42
          - name: ubuntu-jammy-arm
            cloud-image: jammy-arm
            instance-type: m6g.large
            key-name: zuul
            imdsv2: required
      - name: spot
        availability-zone: us-east-2b
        use-internal-ip: true
        public-ipv6: true
        labels:
          - name: big-spot
            cloud-image: jammy
            instance-type: c5.4xlarge
            key-name: zuul
            use-spot: true
            iam-instance-profile:
              arn: arn:aws:iam::123456789012:instance-profile/ci
"""

PROVIDER = 'ec2-us-east-2'


def _data():
    return yaml.safe_load(NODEPOOL_LAYOUT)


def _error(code, message='no', status=400):
    return boto_exceptions.ClientError(
        {'Error': {'Code': code, 'Message': message},
         'ResponseMetadata': {'HTTPStatusCode': status}}, 'RunInstances')


class TestLayout(testtools.TestCase):

    def _layout(self, change):
        data = _data()
        change(data['providers'][0])
        return ff_layout.Layout(data)

    def test_nodepool_layout_loads(self):
        provider = ff_layout.Layout(_data()).providers[PROVIDER]
        self.assertIs(aws.AwsDriver, provider['driver-class'])
        driver = aws.AwsDriver(provider, None)
        self.assertEqual(('us-east-2', 'ci'),
                         (driver.region_name, driver.profile_name))
        label = provider['pools'][0]['labels'][0]
        self.assertEqual({'team': 'infra', 'cost-center': '42'},
                         label['tags'])
        self.assertEqual(80, label['volume-size'])

    def test_image_id_or_filters(self):
        def neither(provider):
            del provider['cloud-images'][1]['image-id']
        e = self.assertRaises(exceptions.ConfigError, self._layout, neither)
        self.assertIn('cloud-images[1].image-id or image-filters: is '
                      'required', str(e))

        def both(provider):
            provider['cloud-images'][1]['image-filters'] = [
                {'name': 'name', 'values': ['x']}]
        e = self.assertRaises(exceptions.ConfigError, self._layout, both)
        self.assertIn('cloud-images[1]', str(e))

    def test_required_and_unknown_keys_named(self):
        def no_region(provider):
            del provider['region-name']
        e = self.assertRaises(exceptions.ConfigError, self._layout,
                              no_region)
        self.assertIn('providers[0].region-name', str(e))

        def no_type(provider):
            del provider['pools'][0]['labels'][0]['instance-type']
        e = self.assertRaises(exceptions.ConfigError, self._layout, no_type)
        self.assertIn('labels[0].instance-type', str(e))

        def unknown(provider):
            provider['pools'][0]['labels'][0]['instance-typ'] = 't3.large'
        e = self.assertRaises(exceptions.ConfigError, self._layout, unknown)
        self.assertIn('labels[0].instance-typ: extra keys not allowed',
                      str(e))

        def aws_tag(provider):
            provider['pools'][0]['labels'][0]['tags'] = {'aws:x': 'y'}
        e = self.assertRaises(exceptions.ConfigError, self._layout, aws_tag)
        self.assertIn('aws:', str(e))

        def many_tags(provider):
            provider['pools'][0]['labels'][0]['tags'] = {
                't%d' % i: 'v' for i in range(aws.MAX_LABEL_TAGS + 1)}
        e = self.assertRaises(exceptions.ConfigError, self._layout,
                              many_tags)
        self.assertIn('labels[0].tags', str(e))

    def test_label_takes_its_cloud_image_values(self):
        layout = self._layout(lambda provider: provider['pools'][0][
            'labels'][1].update({'username': 'zuul'}))
        jammy, arm = layout.providers[PROVIDER]['pools'][0]['labels']
        self.assertEqual(('ubuntu', '/usr/bin/python3', 22),
                         (jammy['username'], jammy['python-path'],
                          jammy['connection-port']))
        self.assertEqual(('zuul', 'auto'),
                         (arm['username'], arm['python-path']))

    def test_label_names_a_provider_image(self):
        e = self.assertRaises(
            exceptions.ConfigError, self._layout,
            lambda provider: provider['pools'][0]['labels'][0].update(
                {'cloud-image': 'focal'}))
        self.assertIn("providers[0].pools[0].labels[0].cloud-image: no "
                      "cloud-image 'focal' in the provider", str(e))

    def test_nodepool_keys_it_lacks_refused_by_name(self):
        def lacking(provider):
            provider['diskimages'] = [{'name': 'x'}]
            provider['pools'][0]['max-resources'] = {'gpu': 1}
            provider['pools'][0]['labels'][0]['dynamic-tags'] = {}
            provider['pools'][0]['labels'][1]['dedicated-host'] = True
        e = self.assertRaises(exceptions.ConfigError, self._layout, lacking)
        for key in ('providers[0].diskimages', 'pools[0].max-resources',
                    'labels[0].dynamic-tags', 'labels[1].dedicated-host'):
            self.assertIn(key + ': not supported by fleetflow', str(e))

    def test_rate_is_requests_per_second(self):
        driver = aws.AwsDriver(ff_layout.Layout(_data()).providers[PROVIDER],
                               None)
        # rate: 2, as nodepool reads it: changes 0.5 s apart, reads 0.05 s
        self.assertEqual((0.5, 0.05), (driver.limiter.delay,
                                       driver.read_limiter.delay))
        unlimited = self._layout(lambda provider: provider.pop('rate'))
        driver = aws.AwsDriver(unlimited.providers[PROVIDER], None)
        self.assertEqual((0, 0), (driver.limiter.delay,
                                  driver.read_limiter.delay))

    def test_registered_as_entry_point(self):
        from fleetflow import drivers
        self.assertIs(aws.AwsDriver, drivers.get_driver_class('aws'))


class TestHelpers(testtools.TestCase):

    def test_client_token(self):
        token = aws.client_token('p', 'node-1', 1)
        self.assertEqual(64, len(token))
        self.assertEqual(token, aws.client_token('p', 'node-1', '1'))
        self.assertNotEqual(token, aws.client_token('p', 'node-1', 2))
        self.assertNotEqual(token, aws.client_token('p', 'node-2', 1))
        self.assertNotEqual(token, aws.client_token('q', 'node-1', 1))

    def test_quota_code(self):
        for instance_type, spot, code in (
                ('t3.micro', False, 'L-1216C47A'),
                ('m6g.large', True, 'L-34B43A08'),
                ('g4dn.xlarge', False, 'L-DB2E81BA'),
                ('dl1.24xlarge', False, 'L-6E869C2A'),
                ('d3.xlarge', False, 'L-1216C47A'),
                ('inf2.xlarge', True, 'L-B5D1601B'),
                ('trn1.2xlarge', False, 'L-2C3B7624'),
                ('x2gd.medium', False, 'L-7295265B'),
                ('u-6tb1.metal', False, None),
                ('', False, None)):
            self.assertEqual(code, aws.quota_code(instance_type, spot),
                             instance_type)


class TestInstances(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.layout = ff_layout.Layout(_data())
        self.driver = aws.AwsDriver(self.layout.providers[PROVIDER], None)

    def _data(self, state='running', reason=None, pool='main',
              label='ubuntu-jammy', **extra):
        data = {'InstanceId': 'i-1', 'State': {'Name': state},
                'PrivateIpAddress': '10.0.0.5',
                'PublicIpAddress': '203.0.113.5',
                'NetworkInterfaces': [{'Ipv6Addresses': [
                    {'Ipv6Address': '2001:db8::5'}]}],
                'Placement': {'AvailabilityZone': 'us-east-2b'},
                'Tags': [{'Key': base.META_POOL, 'Value': pool},
                         {'Key': aws.META_LABEL, 'Value': label},
                         {'Key': base.META_NODE_ID, 'Value': 'n1'}]}
        if reason:
            data['StateReason'] = {'Code': reason, 'Message': reason + '!'}
        data.update(extra)
        return data

    def test_states(self):
        for state, reason, expected in (
                ('pending', None, base.BUILDING),
                ('running', None, base.ACTIVE),
                ('shutting-down', aws.USER_SHUTDOWN, base.DELETING),
                ('stopped', 'Client.UserInitiatedShutdown', base.ERROR),
                ('shutting-down', 'Server.InternalError', base.ERROR),
                ('terminated', 'Server.SpotInstanceTermination',
                 base.ERROR)):
            instance = self.driver._instance(self._data(state, reason))
            self.assertEqual(expected, instance.state, (state, reason))
        # terminated through the API: gone
        self.assertIsNone(self.driver._instance(
            self._data('terminated', aws.USER_SHUTDOWN)))
        self.assertIsNone(self.driver._instance(self._data('terminated')))

    def test_fault_kinds(self):
        for reason, kind in (
                ('Server.InsufficientInstanceCapacity', 'capacity'),
                ('Server.SpotInstanceTermination', 'capacity'),
                ('Client.VolumeLimitExceeded', 'quota'),
                ('Client.InstanceInitiatedShutdown', None)):
            instance = self.driver._instance(self._data('terminated',
                                                        reason))
            self.assertEqual(kind, instance.fault_kind, reason)
            self.assertEqual('terminated: %s!' % reason, instance.fault)
            self.assertIn(instance.fault_kind, (None,) + tuple(
                base.FAULT_ERRORS))

    def test_addresses_and_login(self):
        main = self.driver._instance(self._data())
        self.assertEqual(('203.0.113.5', '10.0.0.5', '2001:db8::5',
                          '203.0.113.5', 'ubuntu', 22, 'us-east-2b',
                          'us-east-2', 'n1'),
                         (main.public_ipv4, main.private_ipv4,
                          main.public_ipv6, main.interface_ip, main.username,
                          main.connection_port, main.az, main.region,
                          main.node_id))
        spot = self.driver._instance(self._data(pool='spot',
                                                label='big-spot'))
        # use-internal-ip wins over public-ipv6
        self.assertEqual('10.0.0.5', spot.interface_ip)
        self.driver._pools['spot']['use-internal-ip'] = False
        spot = self.driver._instance(self._data(pool='spot',
                                                label='big-spot'))
        self.assertEqual('2001:db8::5', spot.interface_ip)
        # no public address: the private one
        private = self.driver._instance(self._data(PublicIpAddress=None))
        self.assertEqual('10.0.0.5', private.interface_ip)


class TestErrors(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.driver = aws.AwsDriver(
            ff_layout.Layout(_data()).providers[PROVIDER], None)

    def test_codes(self):
        for code, error in (
                ('RequestLimitExceeded', base.RateLimitError),
                ('Throttling', base.RateLimitError),
                ('InsufficientInstanceCapacity', base.CapacityError),
                ('InstanceLimitExceeded', base.QuotaError),
                ('VcpuLimitExceeded', base.QuotaError),
                ('MaxSpotInstanceCountExceeded', base.QuotaError),
                ('InvalidInstanceID.NotFound', base.NotFound),
                ('InvalidVolume.NotFound', base.NotFound),
                ('UnauthorizedOperation', base.DriverError),
                ('IdempotentParameterMismatch', base.DriverError)):
            e = self.driver._translate(_error(code, 'said no'), 'create')
            self.assertIs(error, type(e), code)
            self.assertEqual('create: %s: said no' % code, str(e))
            self.assertEqual(code, e.aws_code)

    def test_http_429_without_code_is_a_rate_limit(self):
        e = self.driver._translate(_error('Unknown', status=429), 'list')
        self.assertIsInstance(e, base.RateLimitError)

    def test_no_answer(self):
        e = self.driver._translate(boto_exceptions.EndpointConnectionError(
            endpoint_url='http://127.0.0.1:1'), 'list')
        self.assertIs(base.DriverError, type(e))
        self.assertIsNone(e.aws_code)
        self.assertIn('http://127.0.0.1:1', str(e))

    def test_back_off_doubles_up_to_the_maximum(self):
        waits = []
        for _ in range(10):
            before = time.time()
            e = self.driver._translate(_error('RequestLimitExceeded'), 'x')
            waits.append(e.retry_at - before)
        for count, wait in enumerate(waits):
            expected = min(aws.BACKOFF_MAX, aws.BACKOFF_FIRST * 2 ** count)
            self.assertGreaterEqual(wait, expected)
            self.assertLessEqual(wait, expected * 1.5 + 0.1)


class TestStart(testtools.TestCase):

    def test_unknown_profile_is_a_config_error(self):
        tmp = self.useFixture(fixtures.TempDir()).path
        self.useFixture(fixtures.EnvironmentVariable(
            'AWS_CONFIG_FILE', os.path.join(tmp, 'config')))
        self.useFixture(fixtures.EnvironmentVariable(
            'AWS_SHARED_CREDENTIALS_FILE', os.path.join(tmp, 'credentials')))
        self.useFixture(fixtures.EnvironmentVariable('AWS_PROFILE'))
        driver = aws.AwsDriver(
            ff_layout.Layout(_data()).providers[PROVIDER], None)
        e = self.assertRaises(exceptions.ConfigError, driver.start)
        self.assertIn("cannot use AWS profile 'ci'", str(e))
        self.assertRaises(base.DriverError, driver.list_instances)


class TestPages(testtools.TestCase):

    def test_listing_bounded(self):
        driver = aws.AwsDriver(
            ff_layout.Layout(_data()).providers[PROVIDER], None)
        pages = []

        def call(service, what, operation, **params):
            pages.append(params.get('NextToken'))
            return {'Volumes': [{'VolumeId': 'v'}], 'NextToken': 'again'}

        self.useFixture(fixtures.MockPatchObject(driver, '_call', call))
        self.useFixture(fixtures.MockPatchObject(aws, 'MAX_PAGES', 3))
        e = self.assertRaises(base.DriverError, driver.list_resources)
        self.assertIn('list volumes: more than 3 pages', str(e))
        self.assertEqual([None, 'again', 'again'], pages)


class TestReadme(testtools.TestCase):

    def test_example_loads(self):
        path = os.path.join(os.path.dirname(__file__), '..', '..', '..',
                            'README.md')
        with open(path) as f:
            section = f.read().split('\n### aws\n', 1)[1]
        example = section.split('```yaml\n', 1)[1].split('```', 1)[0]
        layout = ff_layout.Layout(yaml.safe_load(example))
        provider = layout.providers['ec2-us-east-2']
        aws.AwsDriver(provider, None)
        self.assertEqual('t3.large',
                         provider['pools'][0]['labels'][0]['instance-type'])
