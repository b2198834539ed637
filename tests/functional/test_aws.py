"""The aws driver against moto's EC2 server on loopback.

The real driver and the real boto3 talk HTTP to a
:class:`tests.functional.aws_fake.FaultProxy` in front of moto running in
server mode (a subprocess); nothing of boto3 or moto is mocked. The proxy
adds what moto lacks: the error answers EC2 gives and moto never does
(``RequestLimitExceeded``, ``Throttling``, ``InsufficientInstanceCapacity``,
``InstanceLimitExceeded``, ``VcpuLimitExceeded``,
``MaxSpotInstanceCountExceeded``), ClientToken idempotency (moto makes a
new instance for a repeated token), a listing that lags behind a create,
instances EC2 ends on its own (a StateReason moto never sets), and EC2's
vCPU quotas in Service Quotas (moto has only VPC's). Not found answers
(``InvalidInstanceID.NotFound``, ``InvalidAMIID.NotFound``) are moto's own.
"""

import ipaddress
import os
import signal
import subprocess
import sys
import time
import uuid

import fixtures
import testtools
import yaml

from fleetflow.drivers import aws
from fleetflow.drivers import base as driver_base
from fleetflow import launcher as ff_launcher
from fleetflow import layout as ff_layout
from fleetflow import node_states
from tests import base
from tests.functional import aws_fake

PROVIDER = 'ec2-test'
WAIT = 20
TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

LAYOUT = """
labels:
  - name: small
  - name: spot
providers:
  - name: ec2-test
    driver: aws
    region-name: us-east-1
    launch-retries: 2
    cloud-images:
      - name: ubuntu
        image-filters:
          - name: name
            values: [ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-*]
        username: ubuntu
      - name: amazon
        image-id: ami-760aaa0f
        username: ec2-user
        connection-port: 2222
    pools:
      - name: main
        host-key-checking: false
        labels:
          - name: small
            cloud-image: ubuntu
            instance-type: t3.micro
            key-name: fleetflow-key
            volume-size: 20
            volume-type: gp3
            userdata: "#cloud-config\\n"
            tags:
              team: ci
          - name: spot
            cloud-image: amazon
            instance-type: c5.large
            key-name: fleetflow-key
            use-spot: true
            imdsv2: required
"""


def layout_data():
    return yaml.safe_load(LAYOUT)


class AwsTestCase(base.TestCase):

    TIMEOUT = 120

    def setUp(self):
        super().setUp()
        self.aws = self.useFixture(aws_fake.AwsFixture())
        self.proxy = self.aws.proxy
        self.ec2 = self.aws.client()
        self.ec2.create_key_pair(KeyName='fleetflow-key')
        self.layout = ff_layout.Layout(layout_data())
        self.driver = self.make_driver()

    def make_driver(self, provider=None):
        driver = aws.AwsDriver(provider or self.layout.providers[PROVIDER],
                               conf=None)
        driver.start()
        self.addCleanup(driver.stop)
        return driver

    def pool(self):
        return self.layout.get_pool(PROVIDER, 'main')

    def create(self, label='small', node_id=None, attempt=1):
        node_id = node_id or str(uuid.uuid4())
        metadata = {driver_base.META_NODE_ID: node_id,
                    driver_base.META_POOL: 'main',
                    driver_base.META_PROVIDER: PROVIDER,
                    driver_base.META_ATTEMPT: str(attempt)}
        return self.driver.create_instance(
            node_id, self.pool(), self.layout.pool_label(self.pool(), label),
            metadata)

    def wait_state(self, external_id, state):
        deadline = time.time() + WAIT
        while True:
            instance = base.listed(self.driver, external_id)
            if instance.state == state:
                return instance
            if time.time() > deadline:
                self.fail('instance %s is %s, not %s, after %ss'
                          % (external_id, instance.state, state, WAIT))
            time.sleep(0.05)

    def moto_instances(self, node_id=None, states=('pending', 'running')):
        """Instances in moto itself, optionally those of one node."""
        filters = [{'Name': 'instance-state-name', 'Values': list(states)}]
        if node_id:
            filters.append({'Name': 'tag:' + driver_base.META_NODE_ID,
                            'Values': [node_id]})
        return [i for r in self.ec2.describe_instances(
            Filters=filters)['Reservations'] for i in r['Instances']]

    def run_unmanaged(self, instance_type='t3.micro', tags=None):
        """An instance fleetflow did not make, straight in moto."""
        params = {'ImageId': 'ami-760aaa0f', 'InstanceType': instance_type,
                  'MinCount': 1, 'MaxCount': 1}
        if tags:
            params['TagSpecifications'] = [{
                'ResourceType': 'instance',
                'Tags': [{'Key': k, 'Value': val}
                         for k, val in tags.items()]}]
        return self.ec2.run_instances(**params)['Instances'][0]


class TestInstances(AwsTestCase):

    def test_create_list_delete(self):
        node_id = str(uuid.uuid4())
        instance = self.create('small', node_id=node_id)
        self.assertEqual(node_id, instance.node_id)
        self.assertEqual('ubuntu', instance.username)
        self.assertEqual('us-east-1', instance.region)

        [call] = self.proxy.calls('RunInstances')
        self.assertEqual(aws.client_token(PROVIDER, node_id, '1'),
                         call['ClientToken'])
        self.assertEqual(
            ('ami-785db401', 't3.micro', 'fleetflow-key', '20', 'gp3',
             'true', '/dev/sda1', 'true'),
            (call['ImageId'], call['InstanceType'], call['KeyName'],
             call['BlockDeviceMapping.1.Ebs.VolumeSize'],
             call['BlockDeviceMapping.1.Ebs.VolumeType'],
             call['BlockDeviceMapping.1.Ebs.DeleteOnTermination'],
             call['BlockDeviceMapping.1.DeviceName'],
             call['NetworkInterface.1.AssociatePublicIpAddress']))

        active = self.wait_state(instance.external_id, driver_base.ACTIVE)
        [data] = self.moto_instances(node_id)
        self.assertEqual(data['PublicIpAddress'], active.public_ipv4)
        self.assertEqual(data['PublicIpAddress'], active.interface_ip)
        self.assertEqual(data['PrivateIpAddress'], active.private_ipv4)
        self.assertEqual('us-east-1a', active.az)
        self.assertEqual({driver_base.META_NODE_ID: node_id,
                          driver_base.META_POOL: 'main',
                          driver_base.META_PROVIDER: PROVIDER,
                          driver_base.META_ATTEMPT: '1',
                          aws.META_LABEL: 'small', 'team': 'ci',
                          'Name': 'small-%s-%s' % (PROVIDER, node_id)},
                         active.metadata)
        user_data = self.ec2.describe_instance_attribute(
            InstanceId=instance.external_id, Attribute='userData')
        self.assertTrue(user_data['UserData'].get('Value'))

        # the root volume carries the node's tags too
        [volume] = self.ec2.describe_volumes(Filters=[{
            'Name': 'attachment.instance-id',
            'Values': [instance.external_id]}])['Volumes']
        self.assertIn({'Key': driver_base.META_NODE_ID, 'Value': node_id},
                      volume['Tags'])
        self.assertEqual([], self.driver.list_resources())

        self.assertEqual([instance.external_id],
                         [i.external_id for i in
                          self.driver.list_instances()])
        self.assertEqual(instance.external_id,
                         self.driver.find_instance(node_id).external_id)
        self.assertIsNone(self.driver.find_instance('no-such-node'))

        self.driver.delete_instance(instance.external_id)
        self.assertIsNone(base.listed(self.driver, instance.external_id))
        self.assertEqual([], self.driver.list_instances())
        self.assertEqual([], self.moto_instances(node_id))

    def test_spot_label(self):
        instance = self.create('spot')
        [call] = self.proxy.calls('RunInstances')
        self.assertEqual(
            ('ami-760aaa0f', 'c5.large', 'spot', 'required'),
            (call['ImageId'], call['InstanceType'],
             call['InstanceMarketOptions.MarketType'],
             call['MetadataOptions.HttpTokens']))
        # no volume settings: the image's own root volume
        self.assertNotIn('UserData', call)
        self.assertNotIn('BlockDeviceMapping.1.DeviceName', call)
        active = self.wait_state(instance.external_id, driver_base.ACTIVE)
        self.assertEqual(('ec2-user', 2222),
                         (active.username, active.connection_port))

    def test_pool_network_settings(self):
        subnet = self.ec2.describe_subnets(Filters=[
            {'Name': 'availability-zone', 'Values': ['us-east-1b']},
            {'Name': 'default-for-az', 'Values': ['true']}])['Subnets'][0]
        group = self.ec2.describe_security_groups(
            GroupNames=['default'])['SecurityGroups'][0]
        self.pool().update({'subnet-id': subnet['SubnetId'],
                            'security-group-id': group['GroupId'],
                            'availability-zone': 'us-east-1b',
                            'public-ip-address': False})
        instance = self.create()
        [call] = self.proxy.calls('RunInstances')
        self.assertEqual(
            (subnet['SubnetId'], group['GroupId'], 'us-east-1b', 'false'),
            (call['NetworkInterface.1.SubnetId'],
             call['NetworkInterface.1.SecurityGroupId.1'],
             call['Placement.AvailabilityZone'],
             call['NetworkInterface.1.AssociatePublicIpAddress']))
        active = self.wait_state(instance.external_id, driver_base.ACTIVE)
        self.assertEqual(('us-east-1b', None),
                         (active.az, active.public_ipv4))
        self.assertEqual(active.private_ipv4, active.interface_ip)
        self.assertIn(ipaddress.ip_address(active.private_ipv4),
                      ipaddress.ip_network(subnet['CidrBlock']))

    def test_not_found(self):
        missing = 'i-0123456789abcdef0'
        self.assertRaises(driver_base.NotFound, self.driver.delete_instance,
                          missing)
        instance = self.create()
        self.driver.delete_instance(instance.external_id)
        self.assertRaises(driver_base.NotFound, self.driver.delete_instance,
                          instance.external_id)

    def test_ended_by_ec2_is_an_error_with_its_kind(self):
        for code, kind in (('Server.InsufficientInstanceCapacity',
                            'capacity'),
                           ('Client.VolumeLimitExceeded', 'quota'),
                           ('Server.InternalError', None)):
            instance = self.create()
            self.proxy.end_instance(instance.external_id, code,
                                    '%s: ended' % code)
            ended = base.listed(self.driver, instance.external_id)
            self.assertEqual((driver_base.ERROR, kind),
                             (ended.state, ended.fault_kind))
            self.assertIn(code, ended.fault)
            listed = {i.external_id: i for i in self.driver.list_instances()}
            self.assertEqual(driver_base.ERROR,
                             listed[instance.external_id].state)
            # deleting it takes it out of fleetflow's listing
            self.driver.delete_instance(instance.external_id)
            self.assertNotIn(instance.external_id,
                             [i.external_id for i in
                              self.driver.list_instances()])

    def test_image_filter_without_match(self):
        provider = layout_data()['providers'][0]
        provider['cloud-images'][0]['image-filters'][0]['values'] = [
            'no-such-image-*']
        data = layout_data()
        data['providers'][0] = provider
        driver = self.make_driver(
            ff_layout.Layout(data).providers[PROVIDER])
        pool = driver.provider['pools'][0]
        e = self.assertRaises(driver_base.DriverError,
                              driver.create_instance, 'n1', pool,
                              pool['labels'][0], {})
        self.assertNotIsInstance(e, driver_base.NotFound)
        self.assertIn("no available image for cloud-image 'ubuntu'", str(e))
        self.assertEqual([], self.proxy.calls('RunInstances'))


class TestErrors(AwsTestCase):

    def test_each_error_kind(self):
        for code, error in (
                ('RequestLimitExceeded', driver_base.RateLimitError),
                ('InsufficientInstanceCapacity', driver_base.CapacityError),
                ('InstanceLimitExceeded', driver_base.QuotaError),
                ('VcpuLimitExceeded', driver_base.QuotaError),
                ('MaxSpotInstanceCountExceeded', driver_base.QuotaError),
                ('InternalError', driver_base.DriverError)):
            self.proxy.inject('RunInstances', code, 'refused: %s' % code,
                              status=503 if code == 'RequestLimitExceeded'
                              else 400)
            e = self.assertRaises(driver_base.DriverError, self.create)
            self.assertIs(error, type(e), code)
            self.assertIn(code, str(e))
            self.assertEqual(code, e.aws_code)
        # boto3 did not retry any of them on its own
        self.assertEqual(6, len(self.proxy.calls('RunInstances')))
        self.assertEqual([], self.moto_instances())

    def test_moto_own_refusal(self):
        self.layout.providers[PROVIDER]['cloud-images'][1]['image-id'] = \
            'ami-00000000'
        e = self.assertRaises(driver_base.DriverError, self.create, 'spot')
        self.assertIs(driver_base.DriverError, type(e))
        self.assertEqual('InvalidAMIID.NotFound', e.aws_code)
        self.assertIn('ami-00000000', str(e))

    def test_rate_limit_backs_off_more_each_time(self):
        waits = []
        for _ in range(3):
            self.proxy.inject('DescribeInstances', 'Throttling',
                              'Rate exceeded')
            before = time.time()
            e = self.assertRaises(driver_base.RateLimitError,
                                  self.driver.list_instances)
            waits.append(e.retry_at - before)
        self.assertGreaterEqual(waits[0], aws.BACKOFF_FIRST)
        self.assertGreaterEqual(waits[1], 2 * aws.BACKOFF_FIRST)
        self.assertGreaterEqual(waits[2], 4 * aws.BACKOFF_FIRST)
        # a call that succeeds starts the back-off again
        self.assertEqual([], self.driver.list_instances())
        self.proxy.inject('DescribeInstances', 'RequestLimitExceeded', 'x')
        before = time.time()
        e = self.assertRaises(driver_base.RateLimitError,
                              self.driver.list_instances)
        self.assertLess(e.retry_at - before, 2 * aws.BACKOFF_FIRST)

    def test_endpoint_unreachable(self):
        self.useFixture(fixtures.EnvironmentVariable(
            'AWS_ENDPOINT_URL', 'http://127.0.0.1:%d'
            % aws_fake._free_port()))
        driver = self.make_driver()
        start = time.monotonic()
        e = self.assertRaises(driver_base.DriverError, driver.list_instances)
        self.assertIs(driver_base.DriverError, type(e))
        self.assertIsNone(e.aws_code)
        self.assertLess(time.monotonic() - start, 10)

    def test_credentials_not_in_errors_or_logs(self):
        self.proxy.inject('RunInstances', 'AuthFailure', 'not authorized')
        e = self.assertRaises(driver_base.DriverError, self.create)
        instance = self.create()
        self.driver.delete_instance(instance.external_id)
        for text in (str(e), self.logger.output):
            self.assertNotIn('fleetflow-test-secret', text)
            self.assertNotIn('fleetflow-test-key', text)


class TestRate(AwsTestCase):

    def test_changes_spaced_by_the_rate(self):
        data = layout_data()
        data['providers'][0]['rate'] = 4
        driver = self.make_driver(ff_layout.Layout(data).providers[PROVIDER])
        self.driver = driver
        start = time.monotonic()
        for _ in range(3):
            self.create()
        # three RunInstances at 4 a second: the third 0.5 s after the first
        self.assertGreaterEqual(time.monotonic() - start, 0.5)
        self.assertEqual(3, len(driver.list_instances()))


class TestListing(AwsTestCase):

    def test_pages_followed_and_filtered_by_tag(self):
        self.driver.page_size = 5
        ours = {self.create().external_id for _ in range(12)}
        self.run_unmanaged(tags={driver_base.META_PROVIDER: 'other',
                                 driver_base.META_NODE_ID: 'x'})
        self.run_unmanaged()
        self.proxy.reset_calls()
        self.assertEqual(ours, {i.external_id
                                for i in self.driver.list_instances()})
        calls = self.proxy.calls('DescribeInstances')
        self.assertEqual(3, len(calls))
        for call in calls:
            self.assertEqual(('5', 'tag:' + driver_base.META_PROVIDER,
                              PROVIDER),
                             (call['MaxResults'], call['Filter.1.Name'],
                              call['Filter.1.Value.1']))
        self.assertEqual([False, True, True],
                         [bool(c.get('NextToken')) for c in calls])


class FlowTestCase(AwsTestCase):

    def setUp(self):
        super().setUp()
        self.ff = self.useFixture(base.FleetflowFixture(
            layout=layout_data(), workers=4))


class TestFlows(FlowTestCase):

    def test_launch_and_delete(self):
        node, run = self.ff.launch(label='small', provider=PROVIDER,
                                   timeout=WAIT)
        self.assertEqual('SUCCESS', run.state, run.error)
        [data] = self.moto_instances(node['id'])
        self.assertEqual((node_states.READY, data['InstanceId'],
                          data['PublicIpAddress'], 'ubuntu'),
                         (node['state'], node['external_id'],
                          node['interface_ip'], node['username']))
        run = self.ff.delete(self.ff.node(node['id']), timeout=WAIT)
        self.assertEqual('SUCCESS', run.state, run.error)
        self.assertIsNone(self.ff.node(node['id']))
        self.assertEqual([], self.moto_instances(node['id']))

    def test_waiters_share_one_tag_listing(self):
        self.proxy.reset_calls()
        nodes = [self.ff.create_node(label='small', provider=PROVIDER)
                 for _ in range(6)]
        runs = [self.ff.runner.launch(node) for node in nodes]
        for run in runs:
            self.ff.wait_run(run, WAIT)
            self.assertEqual('SUCCESS', run.state, run.error)
        calls = self.proxy.calls('DescribeInstances')
        self.assertTrue(calls)
        for call in calls:
            self.assertNotIn('InstanceId.1', call)
            self.assertEqual('tag:' + driver_base.META_PROVIDER,
                             call['Filter.1.Name'])

    def test_throttled_create_repeats_its_token(self):
        self.proxy.inject('RunInstances', 'RequestLimitExceeded',
                          'Request limit exceeded.', status=503)
        node, run = self.ff.launch(label='small', provider=PROVIDER,
                                   timeout=WAIT)
        self.assertEqual('SUCCESS', run.state, run.error)
        tokens = [c['ClientToken'] for c in self.proxy.calls('RunInstances')]
        self.assertEqual([aws.client_token(PROVIDER, node['id'], 1)] * 2,
                         tokens)
        self.assertEqual(1, len(self.moto_instances(node['id'])))

    def test_instance_ended_during_launch_aborts_the_node(self):
        self.proxy.end_new_instances = [(
            'Server.InsufficientInstanceCapacity',
            'Server.InsufficientInstanceCapacity: Insufficient capacity.')]
        node, run = self.ff.launch(label='small', provider=PROVIDER,
                                   timeout=WAIT)
        # no room: the node is aborted after one attempt, not retried
        self.assertEqual(node_states.ABORTED, node['state'])
        self.assertEqual(1, len(self.proxy.calls('RunInstances')))
        self.assertIn('Insufficient capacity', str(run.error))
        self.assertEqual([], self.driver.list_instances())

    def test_instance_ended_during_launch_fails_the_attempt(self):
        self.proxy.end_new_instances = [(
            'Server.InternalError', 'Server.InternalError: Internal error')]
        node, run = self.ff.launch(label='small', provider=PROVIDER,
                                   timeout=WAIT)
        self.assertEqual('SUCCESS', run.state, run.error)
        self.assertEqual((node_states.READY, 2),
                         (node['state'], node['launch_attempts']))
        # a new attempt, a new token
        self.assertEqual(
            [aws.client_token(PROVIDER, node['id'], attempt)
             for attempt in (1, 2)],
            [c['ClientToken'] for c in self.proxy.calls('RunInstances')])
        self.assertEqual([node['external_id']],
                         [i.external_id for i in
                          self.driver.list_instances()])


class TestLeaks(FlowTestCase):

    def test_leaked_instance_and_volume_removed_on_second_pass(self):
        leaked = self.create(node_id='gone-node')
        volume = self.ec2.create_volume(
            AvailabilityZone='us-east-1a', Size=8, TagSpecifications=[{
                'ResourceType': 'volume', 'Tags': [
                    {'Key': driver_base.META_PROVIDER, 'Value': PROVIDER},
                    {'Key': driver_base.META_NODE_ID,
                     'Value': 'gone-node-2'}]}])['VolumeId']
        foreign = self.ec2.create_volume(
            AvailabilityZone='us-east-1a', Size=8, TagSpecifications=[{
                'ResourceType': 'volume', 'Tags': [
                    {'Key': driver_base.META_PROVIDER, 'Value': 'other'}]}])
        node, run = self.ff.launch(label='small', provider=PROVIDER,
                                   timeout=WAIT)
        self.assertEqual('SUCCESS', run.state, run.error)

        launcher = ff_launcher.Launcher(self.ff.ctx)
        self.addCleanup(launcher.runner.stop)
        launcher.cleanup_leaks()
        self.assertEqual(1, len(self.moto_instances('gone-node')))
        self.assertEqual([volume], [r.resource_id for r in
                                    self.driver.list_resources()])
        launcher.cleanup_leaks()
        self.assertEqual([], self.moto_instances('gone-node'))
        self.assertEqual([], self.driver.list_resources())
        self.assertEqual(
            {foreign['VolumeId']},
            {v['VolumeId'] for v in self.ec2.describe_volumes(Filters=[{
                'Name': 'status', 'Values': ['available']}])['Volumes']})
        # the node's own instance stays
        self.assertEqual([node['external_id']],
                         [i.external_id for i in
                          self.driver.list_instances()
                          if i.external_id != leaked.external_id])
        self.assertEqual(2, launcher.leaked[(PROVIDER, 'instance')] +
                         launcher.leaked[(PROVIDER, 'volume')])


class TestQuota(AwsTestCase):

    def test_limits_from_service_quotas_minus_unmanaged(self):
        # on-demand standard: set for the account; spot: AWS's default
        self.proxy.quotas = {'L-1216C47A': 64}
        self.proxy.default_quotas = {'L-34B43A08': 100}
        self.assertEqual(driver_base.Quota(cores=64),
                         self.driver.get_quota_limits())
        calls = self.proxy.calls('GetServiceQuota')
        self.assertEqual({('ec2', 'L-1216C47A'), ('ec2', 'L-34B43A08')},
                         {(c['ServiceCode'], c['QuotaCode']) for c in calls})
        self.assertEqual([{'ServiceCode': 'ec2', 'QuotaCode': 'L-34B43A08'}],
                         self.proxy.calls('GetAWSDefaultServiceQuota'))

        # ours: not subtracted; another's and an untagged one: subtracted
        self.create()
        self.assertEqual(driver_base.Quota(cores=64),
                         self.driver.get_quota_limits())
        self.run_unmanaged('m5.xlarge')
        self.run_unmanaged('t3.micro', tags={
            driver_base.META_PROVIDER: 'other'})
        # a type under another limit (G) is not counted against standard
        self.run_unmanaged('g4dn.xlarge')
        self.assertEqual(driver_base.Quota(cores=64 - 4 - 2),
                         self.driver.get_quota_limits())
        # the limits themselves are cached
        self.assertEqual(2, len(self.proxy.calls('GetServiceQuota')))

    def test_service_quotas_denied(self):
        self.proxy.inject('GetServiceQuota', 'AccessDeniedException',
                          'not allowed', times=2)
        self.assertEqual(driver_base.Quota(),
                         self.driver.get_quota_limits())
        self.assertIn('no vCPU limit from Service Quotas',
                      self.logger.output)
        # other refusals are errors
        self.proxy.inject('GetServiceQuota', 'ServiceException', 'down')
        self.assertRaises(driver_base.DriverError,
                          self.make_driver().get_quota_limits)

    def test_provider_caps(self):
        self.proxy.quotas = {'L-1216C47A': 64, 'L-34B43A08': 8}
        data = layout_data()
        data['providers'][0].update({'max-servers': 5, 'max-cores': 16,
                                     'max-ram': 4096})
        driver = self.make_driver(
            ff_layout.Layout(data).providers[PROVIDER])
        self.assertEqual(driver_base.Quota(instances=5, cores=8, ram=4096),
                         driver.get_quota_limits())

    def test_label_quota(self):
        self.assertEqual(
            driver_base.Quota(instances=1, cores=2, ram=1024),
            self.driver.get_quota_for_label(
                self.pool(), self.layout.pool_label(self.pool(), 'small')))
        self.assertEqual(
            driver_base.Quota(instances=1, cores=2, ram=4096),
            self.driver.get_quota_for_label(
                self.pool(), self.layout.pool_label(self.pool(), 'spot')))
        self.driver.get_quota_for_label(
            self.pool(), self.layout.pool_label(self.pool(), 'small'))
        self.assertEqual(2, len(self.proxy.calls('DescribeInstanceTypes')))


class TestCrash(AwsTestCase):
    """A launcher SIGKILLed between RunInstances and its answer."""

    def setUp(self):
        super().setUp()
        self.state = self.useFixture(fixtures.TempDir()).path
        self.layout_path = os.path.join(self.state, 'layout.yaml')
        with open(self.layout_path, 'w') as f:
            f.write(LAYOUT)
        self.node_id = str(uuid.uuid4())

    def child(self):
        process = subprocess.Popen(
            [sys.executable, '-m', 'tests.functional.aws_child',
             '--state', self.state, '--layout', self.layout_path,
             '--node', self.node_id],
            cwd=TOP, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.addCleanup(_kill, process)
        return process

    def finish(self, process):
        out, err = process.communicate(timeout=90)
        self.addDetail('child-stderr', testtools.content.text_content(err))
        self.assertEqual(0, process.returncode, out)
        return out.split()[-2:]

    def kill_while_answer_held(self):
        self.proxy.hold('RunInstances')
        first = self.child()
        self.assertTrue(self.proxy.held.wait(60), 'no RunInstances')
        # the instance exists in EC2; the launcher never saw the answer
        self.assertEqual(1, len(self.moto_instances(self.node_id)))
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        self.proxy.released.set()

    def test_resumed_launch_finds_the_instance_by_tag(self):
        self.kill_while_answer_held()
        state, external_id = self.finish(self.child())
        self.assertEqual(node_states.READY, state)
        [instance] = self.moto_instances(self.node_id)
        self.assertEqual(instance['InstanceId'], external_id)
        # the tag lookup found it: no second RunInstances
        [call] = self.proxy.calls('RunInstances')
        self.assertEqual(aws.client_token(PROVIDER, self.node_id, 1),
                         call['ClientToken'])

    def test_lagging_listing_falls_back_on_the_client_token(self):
        # EC2's listing may not show a new instance yet: the lookup by
        # tag finds nothing, and the token makes the repeat harmless
        self.proxy.lag_new_instances = True
        self.kill_while_answer_held()
        state, external_id = self.finish(self.child())
        self.assertEqual(node_states.READY, state)
        [instance] = self.moto_instances(self.node_id)
        self.assertEqual(instance['InstanceId'], external_id)
        tokens = [c['ClientToken'] for c in self.proxy.calls('RunInstances')]
        self.assertEqual([aws.client_token(PROVIDER, self.node_id, 1)] * 2,
                         tokens)


def _kill(process):
    if process.poll() is None:
        process.kill()
        process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
