"""The openstack driver against a simulated cloud on loopback.

The real driver and the real openstacksdk (and keystoneauth) talk HTTP to
:class:`tests.functional.openstack_fake.FakeCloud` through a temporary
clouds.yaml; nothing of openstacksdk is mocked.
"""

import base64
import logging
import os
import threading
import time
import uuid

import fixtures
import testtools
import yaml

from fleetflow.drivers import base
from fleetflow.drivers import openstack as os_driver
from fleetflow import exceptions
from fleetflow import layout as ff_layout
from fleetflow import ratelimit
from tests import base as test_base
from tests.functional import openstack_fake

PROVIDER = 'cloud1'

LAYOUT = """
labels:
  - name: small
  - name: medium
  - name: big
  - name: volume
  - name: fip
  - name: internal
providers:
  - name: cloud1
    driver: openstack
    cloud: fake
    region-name: RegionOne
    rate: 0
    pools:
      - name: main
        networks: [public]
        availability-zones: [nova]
        labels:
          - name: small
            flavor-name: m1.small
            cloud-image: cirros
            username: zuul
            key-name: fleetflow-key
            userdata: "#cloud-config\\n"
            instance-properties:
              team: ci
          - name: medium
            min-ram: 3000
            cloud-image: cirros
          - name: big
            min-ram: 3000
            flavor-name: large
            cloud-image: cirros
          - name: volume
            flavor-name: m1.small
            cloud-image: cirros
            boot-from-volume: true
            volume-size: 20
      - name: floating
        networks: [private]
        auto-floating-ip: true
        labels:
          - name: fip
            flavor-name: m1.small
            cloud-image: cirros
      - name: inside
        networks: [private]
        auto-floating-ip: true
        floating-ip-network: ext-net
        use-internal-ip: true
        labels:
          - name: internal
            flavor-name: m1.tiny
            cloud-image: cirros
"""

WAIT = 10


class CloudFixture(fixtures.Fixture):
    """A started FakeCloud and a clouds.yaml that points at it."""

    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs

    def _setUp(self):
        self.cloud = openstack_fake.FakeCloud(**self.kwargs).start()
        self.addCleanup(self.cloud.stop)
        tmp = self.useFixture(fixtures.TempDir()).path
        self.clouds_yaml = os.path.join(tmp, 'clouds.yaml')
        with open(self.clouds_yaml, 'w') as f:
            f.write(self.cloud.clouds_yaml('fake'))
        for name in list(os.environ):
            if name.startswith('OS_'):
                self.useFixture(fixtures.EnvironmentVariable(name))
        self.useFixture(fixtures.EnvironmentVariable(
            'OS_CLIENT_CONFIG_FILE', self.clouds_yaml))


class OpenStackTestCase(testtools.TestCase):

    BUILD_DELAY = 0.1

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(60, gentle=True))
        self.log = self.useFixture(fixtures.FakeLogger(
            level=logging.DEBUG, name='fleetflow'))
        self.cloud = self.useFixture(
            CloudFixture(build_delay=self.BUILD_DELAY)).cloud
        self.layout = ff_layout.Layout(yaml.safe_load(LAYOUT))
        self.driver = self.make_driver()

    def make_driver(self, provider=None):
        driver = os_driver.OpenStackDriver(
            provider or self.layout.providers[PROVIDER], conf=None)
        driver.start()
        self.addCleanup(driver.stop)
        return driver

    def pool(self, name='main'):
        return self.layout.get_pool(PROVIDER, name)

    def label(self, name, pool='main'):
        return self.layout.pool_label(self.pool(pool), name)

    def create(self, label='small', pool='main', node_id=None, driver=None):
        driver = driver or self.driver
        node_id = node_id or str(uuid.uuid4())
        metadata = {base.META_NODE_ID: node_id, base.META_POOL: pool,
                    base.META_PROVIDER: driver.name}
        return driver.create_instance(node_id, self.pool(pool),
                                      self.label(label, pool), metadata)

    def wait_state(self, external_id, state, driver=None):
        driver = driver or self.driver
        deadline = time.time() + WAIT
        while True:
            instance = test_base.listed(driver, external_id)
            if instance.state == state:
                return instance
            if time.time() > deadline:
                self.fail('instance %s is %s, not %s, after %ss'
                          % (external_id, instance.state, state, WAIT))
            time.sleep(0.02)

    def wait_gone(self, external_id):
        deadline = time.time() + WAIT
        while True:
            if test_base.listed(self.driver, external_id) is None:
                return
            if time.time() > deadline:
                self.fail('instance %s still there after %ss'
                          % (external_id, WAIT))
            time.sleep(0.02)


class TestLayout(OpenStackTestCase):

    def _layout(self, label=None, pool=None, provider=None):
        data = yaml.safe_load(LAYOUT)
        entry = data['providers'][0]
        entry.update(provider or {})
        entry['pools'][0].update(pool or {})
        entry['pools'][0]['labels'][0].update(label or {})
        return ff_layout.Layout(data)

    def test_valid_layout(self):
        provider = self.layout.providers[PROVIDER]
        self.assertIs(os_driver.OpenStackDriver, provider['driver-class'])
        self.assertEqual('fake', provider['cloud'])
        self.assertEqual(3000, self.label('medium')['min-ram'])

    def test_flavor_or_min_ram_required(self):
        data = yaml.safe_load(LAYOUT)
        del data['providers'][0]['pools'][0]['labels'][0]['flavor-name']
        e = self.assertRaises(exceptions.ConfigError, ff_layout.Layout, data)
        self.assertIn('labels[0]: flavor-name or min-ram is required',
                      str(e))

    def test_cloud_required(self):
        data = yaml.safe_load(LAYOUT)
        del data['providers'][0]['cloud']
        e = self.assertRaises(exceptions.ConfigError, ff_layout.Layout, data)
        self.assertIn('providers[0].cloud', str(e))

    def test_unknown_key_named(self):
        e = self.assertRaises(exceptions.ConfigError, self._layout,
                              label={'flavour-name': 'x'})
        self.assertIn('labels[0].flavour-name', str(e))
        e = self.assertRaises(exceptions.ConfigError, self._layout,
                              pool={'auto-floating-ip': 'yes'})
        self.assertIn('pools[0].auto-floating-ip', str(e))

    def test_reserved_instance_properties_refused(self):
        layout = self._layout(label={'instance-properties': {
            'team': 'ci', 'fleetflow-port-id': 'another-port'}})
        e = self.assertRaises(exceptions.ConfigError,
                              os_driver.OpenStackDriver,
                              layout.providers[PROVIDER], None)
        self.assertIn('label small: instance-properties may not set '
                      'fleetflow-port-id', str(e))

    def test_floating_ip_needs_networks(self):
        data = yaml.safe_load(LAYOUT)
        del data['providers'][0]['pools'][1]['networks']
        layout = ff_layout.Layout(data)
        e = self.assertRaises(exceptions.ConfigError,
                              os_driver.OpenStackDriver,
                              layout.providers[PROVIDER], None)
        self.assertIn('auto-floating-ip needs networks', str(e))


class TestInstances(OpenStackTestCase):

    def test_create_active_delete(self):
        node_id = str(uuid.uuid4())
        instance = self.create('small', node_id=node_id)
        self.assertEqual(base.BUILDING, instance.state)
        self.assertEqual(node_id, instance.node_id)
        self.assertEqual('zuul', instance.username)
        self.assertEqual('nova', instance.az)
        self.assertEqual('RegionOne', instance.region)

        server = self.cloud.servers[instance.external_id]
        self.assertEqual('m1.small', server['flavor']['original_name'])
        self.assertEqual('fleetflow-key', server['key_name'])
        self.assertEqual('nova', server['OS-EXT-AZ:availability_zone'])
        self.assertEqual({base.META_NODE_ID: node_id, base.META_POOL: 'main',
                          base.META_PROVIDER: PROVIDER,
                          os_driver.META_LABEL: 'small', 'team': 'ci'},
                         server['metadata'])
        self.assertEqual('small-cloud1-' + node_id, server['name'])
        self.assertEqual('#cloud-config\n',
                         base64.b64decode(server['_user_data']).decode())

        active = self.wait_state(instance.external_id, base.ACTIVE)
        self.assertTrue(active.public_ipv4.startswith('203.0.113.'))
        self.assertTrue(active.public_ipv6.startswith('2001:db8:1::'))
        # a provider network with routable addresses: one fixed address
        self.assertEqual(active.public_ipv4, active.private_ipv4)
        self.assertEqual(active.public_ipv4, active.interface_ip)
        self.assertEqual('nova', active.az)
        self.assertEqual('RegionOne', active.region)
        self.assertEqual('zuul', active.username)
        self.assertIsNone(active.fault)

        listed = self.driver.list_instances()
        self.assertEqual([instance.external_id],
                         [i.external_id for i in listed])
        self.assertEqual(base.ACTIVE, listed[0].state)
        found = self.driver.find_instance(node_id)
        self.assertEqual(instance.external_id, found.external_id)
        self.assertIsNone(self.driver.find_instance('no-such-node'))

        self.driver.delete_instance(instance.external_id)
        self.wait_gone(instance.external_id)
        self.assertEqual([], self.driver.list_instances())

    def test_private_network_and_deleting_state(self):
        self.cloud.delete_delay = 5
        data = yaml.safe_load(LAYOUT)
        data['providers'][0]['pools'][0]['networks'] = ['private']
        self.layout = ff_layout.Layout(data)
        driver = self.make_driver()
        instance = self.create('small', driver=driver)
        active = self.wait_state(instance.external_id, base.ACTIVE,
                                 driver=driver)
        self.assertTrue(active.private_ipv4.startswith('10.0.0.'))
        self.assertIsNone(active.public_ipv4)
        # a ULA address is not public
        self.assertIsNone(active.public_ipv6)
        self.assertEqual(active.private_ipv4, active.interface_ip)
        driver.delete_instance(instance.external_id)
        self.assertEqual(base.DELETING,
                         test_base.listed(driver, instance.external_id).state)

    def test_min_ram_selects_smallest_flavor(self):
        instance = self.create('medium')
        self.assertEqual(
            'm1.medium',
            self.cloud.servers[instance.external_id]['flavor'][
                'original_name'])
        instance = self.create('big')
        self.assertEqual(
            'm1.large',
            self.cloud.servers[instance.external_id]['flavor'][
                'original_name'])

    def test_no_fitting_flavor(self):
        self.label('medium')['min-ram'] = 10 ** 6
        e = self.assertRaises(base.DriverError, self.create, 'medium')
        self.assertNotIsInstance(e, base.NotFound)
        self.assertIn('no flavor with at least 1000000 MiB', str(e))

    def test_missing_image(self):
        self.label('small')['image'] = 'no-such-image'
        e = self.assertRaises(base.DriverError, self.create, 'small')
        self.assertNotIsInstance(e, base.NotFound)
        self.assertIn("no image 'no-such-image'", str(e))

    def test_replaced_image_looked_up_again(self):
        self.create('small')
        old = self.cloud.images.popitem()[0]
        new = self.cloud.add_image('cirros', status='active')['id']
        self.assertNotEqual(old, new)
        e = self.assertRaises(base.DriverError, self.create, 'small')
        self.assertIn('could not be found', str(e))
        instance = self.create('small')
        self.assertEqual({'id': new},
                         self.cloud.servers[instance.external_id]['image'])

    def test_lookups_cached(self):
        self.create('small')
        self.create('small')
        self.create('medium')
        self.assertEqual(1, self.cloud.calls['compute.flavors.detail'])
        self.assertEqual(1, self.cloud.calls['image.images.list'])
        self.assertEqual(1, self.cloud.calls['network.networks.list'])
        self.assertEqual(3, self.cloud.calls['compute.servers.create'])

    def test_error_with_quota_fault(self):
        self.cloud.fail_next_servers(
            'Build of instance aborted: Quota exceeded for ram: Requested '
            '2048, but already used 51200 of 51200 ram', code=500)
        instance = self.create('small')
        error = self.wait_state(instance.external_id, base.ERROR)
        self.assertIn('Quota exceeded for ram', error.fault)
        self.assertEqual('quota', error.fault_kind)
        listed = self.driver.list_instances()
        self.assertEqual(base.ERROR, listed[0].state)
        self.assertEqual('quota', listed[0].fault_kind)

    def test_error_with_other_quota_faults(self):
        for message in (
                'Maximum number of ports exceeded',
                "VolumeLimitExceeded: Maximum number of volumes allowed "
                "(10) exceeded for quota 'volumes'.",
                'Requested volume or snapshot exceeds allowed gigabytes '
                'quota.'):
            self.cloud.fail_next_servers(message)
            instance = self.create('small')
            error = self.wait_state(instance.external_id, base.ERROR)
            self.assertEqual(message, error.fault)
            self.assertEqual('quota', error.fault_kind, message)

    def test_error_for_capacity_or_another_kind(self):
        for message, kind in (
                ('No valid host was found. There are not enough hosts '
                 'available.', 'capacity'),
                ('Build of instance aborted: Failed to allocate the '
                 'network(s)', None)):
            self.cloud.fail_next_servers(message)
            instance = self.create('small')
            error = self.wait_state(instance.external_id, base.ERROR)
            self.assertEqual((message, kind), (error.fault, error.fault_kind))

    def test_not_found(self):
        missing = str(uuid.uuid4())
        self.assertRaises(base.NotFound, self.driver.delete_instance,
                          missing)
        instance = self.create('small')
        self.driver.delete_instance(instance.external_id)
        self.wait_gone(instance.external_id)
        self.assertRaises(base.NotFound, self.driver.delete_instance,
                          instance.external_id)

    def test_leaked_servers_listed_by_metadata(self):
        ours = self.cloud.add_server('leaked', metadata={
            base.META_NODE_ID: 'node-99', base.META_POOL: 'main',
            base.META_PROVIDER: PROVIDER})
        self.cloud.add_server('theirs', metadata={
            base.META_NODE_ID: 'node-98', base.META_POOL: 'main',
            base.META_PROVIDER: 'other-provider'})
        self.cloud.add_server('unmanaged')
        listed = self.driver.list_instances()
        self.assertEqual([ours['id']], [i.external_id for i in listed])
        self.assertEqual({base.META_NODE_ID: 'node-99',
                          base.META_POOL: 'main',
                          base.META_PROVIDER: PROVIDER},
                         listed[0].metadata)
        self.assertEqual('node-99', listed[0].node_id)
        self.assertEqual(ours['id'],
                         self.driver.find_instance('node-99').external_id)
        self.assertIsNone(self.driver.find_instance('node-98'))


class TestErrors(OpenStackTestCase):

    def test_rate_limited_with_retry_after(self):
        self.cloud.inject('compute.servers.create', 429,
                          'Rate limit exceeded', headers={'Retry-After': '7'})
        before = time.time()
        e = self.assertRaises(base.RateLimitError, self.create, 'small')
        self.assertGreaterEqual(e.retry_at, before + 7)
        self.assertLess(e.retry_at, time.time() + 7.5)
        self.assertIn('429', str(e))
        # openstacksdk did not retry it on its own
        self.assertEqual(1, self.cloud.calls['compute.servers.create'])
        self.assertEqual(base.BUILDING, self.create('small').state)

    def test_413_with_retry_after_is_rate_limit(self):
        self.cloud.inject('compute.servers.detail', 413,
                          'This request was rate-limited.',
                          headers={'Retry-After': '3'})
        before = time.time()
        e = self.assertRaises(base.RateLimitError,
                              self.driver.list_instances)
        self.assertGreaterEqual(e.retry_at, before + 3)
        self.assertEqual([], self.driver.list_instances())

    def test_429_http_date_and_no_header(self):
        later = time.time() + 30
        self.cloud.inject('compute.servers.get', 429, 'Slow down',
                          headers={'Retry-After': time.strftime(
                              '%a, %d %b %Y %H:%M:%S GMT',
                              time.gmtime(later))})
        e = self.assertRaises(base.RateLimitError,
                              self.driver.delete_instance, 'x')
        self.assertAlmostEqual(later, e.retry_at, delta=1.5)
        self.cloud.inject('compute.servers.get', 429, 'Slow down')
        e = self.assertRaises(base.RateLimitError,
                              self.driver.delete_instance, 'x')
        self.assertLess(e.retry_at, time.time() + 5)

    def test_quota_exceeded_on_create(self):
        self.cloud.max_instances = 1
        self.create('small')
        e = self.assertRaises(base.QuotaError, self.create, 'small')
        self.assertIn('Quota exceeded for instances', str(e))

    def test_quota_answers(self):
        for status, message in (
                (403, 'Quota exceeded for cores: Requested 1, but already '
                      'used 20 of 20 cores'),
                (413, 'Quota exceeded for ram: Requested 2048, but already '
                      'used 51200 of 51200 ram'),
                (403, 'Maximum number of ports exceeded'),
                (413, "VolumeLimitExceeded: Maximum number of volumes "
                      "allowed (10) exceeded for quota 'volumes'.")):
            self.cloud.inject('compute.servers.create', status, message)
            e = self.assertRaises(base.QuotaError, self.create, 'small')
            self.assertIn(message, str(e))

    def test_capacity_answer(self):
        self.cloud.inject('compute.servers.create', 500,
                          'No valid host was found. There are not enough '
                          'hosts available.')
        e = self.assertRaises(base.CapacityError, self.create, 'small')
        self.assertIn('No valid host', str(e))

    def test_other_errors(self):
        self.cloud.inject('compute.servers.create', 500,
                          'Unexpected API Error.')
        e = self.assertRaises(base.DriverError, self.create, 'small')
        self.assertIs(base.DriverError, type(e))
        self.assertIn('Unexpected API Error.', str(e))
        self.cloud.inject('compute.servers.create', 403,
                          "Policy doesn't allow os_compute_api:servers:create"
                          " to be performed.")
        e = self.assertRaises(base.DriverError, self.create, 'small')
        self.assertIs(base.DriverError, type(e))

    def test_cloud_unreachable(self):
        self.driver.list_instances()
        self.cloud.stop()
        start = time.monotonic()
        e = self.assertRaises(base.DriverError, self.driver.list_instances)
        self.assertIs(base.DriverError, type(e))
        self.assertIsNone(e.http_status)
        self.assertLess(time.monotonic() - start, 5)

    def test_bad_credentials_not_leaked(self):
        path = os.environ['OS_CLIENT_CONFIG_FILE']
        with open(path) as f:
            text = f.read()
        with open(path, 'w') as f:
            f.write(text.replace(openstack_fake.PASSWORD, 'wrong-secret'))
        driver = os_driver.OpenStackDriver(self.layout.providers[PROVIDER],
                                           None)
        self.addCleanup(driver.stop)
        e = self.assertRaises(base.DriverError, driver.list_instances)
        self.assertNotIn('wrong-secret', str(e))

    def test_unknown_cloud(self):
        provider = dict(self.layout.providers[PROVIDER], cloud='nowhere')
        driver = os_driver.OpenStackDriver(provider, None)
        e = self.assertRaises(exceptions.ConfigError, driver.start)
        self.assertIn("'nowhere'", str(e))
        e = self.assertRaises(base.DriverError, driver.list_instances)
        self.assertIn("'nowhere'", str(e))

    def test_credentials_not_logged(self):
        instance = self.create('small')
        self.wait_state(instance.external_id, base.ACTIVE)
        self.driver.delete_instance(instance.external_id)
        self.driver.get_quota_limits()
        output = self.log.output
        self.assertIn('created server', output)
        self.assertNotIn(openstack_fake.PASSWORD, output)
        self.assertNotIn(openstack_fake.USERNAME, output)


class TestFloatingIpsAndVolumes(OpenStackTestCase):

    def test_floating_ip(self):
        node_id = str(uuid.uuid4())
        instance = self.create('fip', pool='floating', node_id=node_id)
        self.assertEqual(1, len(self.cloud.ports))
        self.assertEqual(1, len(self.cloud.floating_ips))
        port = next(iter(self.cloud.ports.values()))
        fip = next(iter(self.cloud.floating_ips.values()))
        self.assertEqual(port['id'], fip['port_id'])
        self.assertEqual(instance.external_id, port['device_id'])

        active = self.wait_state(instance.external_id, base.ACTIVE)
        self.assertEqual(fip['floating_ip_address'], active.public_ipv4)
        self.assertEqual(fip['floating_ip_address'], active.interface_ip)
        self.assertEqual(port['fixed_ips'][0]['ip_address'],
                         active.private_ipv4)

        resources = {(r.resource_type, r.resource_id): r.metadata
                     for r in self.driver.list_resources()}
        tags = {base.META_NODE_ID: node_id, base.META_POOL: 'floating',
                base.META_PROVIDER: PROVIDER}
        self.assertEqual({('floatingip', fip['id']): tags,
                          ('port', port['id']): tags}, resources)

        self.driver.delete_instance(instance.external_id)
        self.wait_gone(instance.external_id)
        self.assertEqual({}, self.cloud.floating_ips)
        self.assertEqual({}, self.cloud.ports)
        self.assertEqual([], self.driver.list_resources())

    def test_delete_checks_the_resources_own_tag(self):
        victim = self.create('fip', pool='floating')
        victim_port = self.cloud.servers[victim.external_id]['metadata'][
            os_driver.META_PORT]
        victim_fip = self.cloud.servers[victim.external_id]['metadata'][
            os_driver.META_FIP]
        attacker = self.create('fip', pool='floating')
        # the attacker's server metadata now names the victim's resources
        self.cloud.servers[attacker.external_id]['metadata'].update({
            os_driver.META_PORT: victim_port,
            os_driver.META_FIP: victim_fip})
        self.driver.delete_instance(attacker.external_id)
        self.wait_gone(attacker.external_id)
        self.assertIn(victim_port, self.cloud.ports)
        self.assertIn(victim_fip, self.cloud.floating_ips)
        self.assertIn('SECURITY: provider %s: server %s names port %s'
                      % (PROVIDER, attacker.external_id, victim_port),
                      self.log.output)
        # the victim's own delete still removes them
        self.driver.delete_instance(victim.external_id)
        self.wait_gone(victim.external_id)
        self.assertNotIn(victim_port, self.cloud.ports)
        self.assertNotIn(victim_fip, self.cloud.floating_ips)

    def test_internal_ip(self):
        instance = self.create('internal', pool='inside')
        active = self.wait_state(instance.external_id, base.ACTIVE)
        self.assertTrue(active.public_ipv4.startswith('172.24.4.'))
        self.assertTrue(active.private_ipv4.startswith('10.0.0.'))
        self.assertEqual(active.private_ipv4, active.interface_ip)

    def test_retry_reuses_port_and_floating_ip(self):
        node_id = str(uuid.uuid4())
        self.cloud.inject('compute.servers.create', 500, 'Boom')
        self.assertRaises(base.DriverError, self.create, 'fip',
                          pool='floating', node_id=node_id)
        # the failed attempt cleaned up after itself
        self.assertEqual({}, self.cloud.ports)
        self.assertEqual({}, self.cloud.floating_ips)
        # a crash between port and server leaves them; the retry reuses them
        self.cloud.inject('compute.servers.create', 500, 'Boom')
        self.cloud.inject('network.fips.delete', 500, 'Neutron down')
        self.cloud.inject('network.ports.delete', 500, 'Neutron down')
        self.assertRaises(base.DriverError, self.create, 'fip',
                          pool='floating', node_id=node_id)
        self.assertEqual(1, len(self.cloud.ports))
        self.assertEqual(1, len(self.cloud.floating_ips))
        instance = self.create('fip', pool='floating', node_id=node_id)
        self.assertEqual(1, len(self.cloud.ports))
        self.assertEqual(1, len(self.cloud.floating_ips))
        port = next(iter(self.cloud.ports.values()))
        self.assertEqual(instance.external_id, port['device_id'])

    def test_leaked_floating_ip_deleted(self):
        self.cloud.inject('compute.servers.create', 500, 'Boom')
        self.cloud.inject('network.fips.delete', 500, 'Neutron down')
        self.cloud.inject('network.ports.delete', 500, 'Neutron down')
        self.assertRaises(base.DriverError, self.create, 'fip',
                          pool='floating', node_id='gone-node')
        resources = self.driver.list_resources()
        self.assertEqual(['floatingip', 'port'],
                         sorted(r.resource_type for r in resources))
        for resource in resources:
            self.assertEqual('gone-node',
                             resource.metadata[base.META_NODE_ID])
            self.driver.delete_resource(resource)
        self.assertEqual([], self.driver.list_resources())
        self.assertRaises(base.NotFound, self.driver.delete_resource,
                          resources[0])

    def test_nodepool_cloud_images_and_pool_keys(self):
        data = yaml.safe_load(LAYOUT)
        data['labels'].append({'name': 'noble'})
        provider = data['providers'][0]
        provider['cloud-images'] = [{
            'name': 'noble', 'image-name': 'cirros', 'username': 'ubuntu',
            'config-drive': True, 'connection-port': 2022}]
        provider['pools'].append({
            'name': 'grouped', 'networks': ['public'],
            'security-groups': ['zuul-ssh', 'default'],
            'labels': [{'name': 'noble', 'cloud-image': 'noble',
                        'flavor-name': 'm1.small',
                        'networks': ['private']}]})
        self.layout = ff_layout.Layout(data)
        driver = self.make_driver()
        instance = self.create('noble', pool='grouped', driver=driver)
        server = self.cloud.servers[instance.external_id]
        self.assertEqual([{'name': 'zuul-ssh'}, {'name': 'default'}],
                         server['security_groups'])
        self.assertEqual('True', server['config_drive'])
        [cirros] = [image['id'] for image in self.cloud.images.values()
                    if image['name'] == 'cirros']
        self.assertEqual({'id': cirros}, server['image'])
        # the label's networks, not the pool's
        self.assertEqual([self.cloud.network_by_name('private')['id']],
                         [nic['network_id'] for nic in server['_nics']])
        active = self.wait_state(instance.external_id, base.ACTIVE,
                                 driver=driver)
        self.assertEqual(('ubuntu', 2022),
                         (active.username, active.connection_port))

    def test_boot_from_volume(self):
        instance = self.create('volume')
        server = self.cloud.servers[instance.external_id]
        self.assertEqual('', server['image'])
        self.assertEqual(1, len(self.cloud.volumes))
        volume = next(iter(self.cloud.volumes.values()))
        self.assertEqual(20, volume['size'])
        self.wait_state(instance.external_id, base.ACTIVE)
        self.driver.delete_instance(instance.external_id)
        self.wait_gone(instance.external_id)
        self.assertEqual({}, self.cloud.volumes)

    def test_boot_volume_left_behind_is_listed(self):
        self.cloud.delete_volumes_on_termination = False
        node_id = str(uuid.uuid4())
        instance = self.create('volume', node_id=node_id)
        self.wait_state(instance.external_id, base.ACTIVE)
        self.cloud.add_volume(metadata={'someone': 'else'})
        self.assertEqual([], self.driver.list_resources())
        self.driver.delete_instance(instance.external_id)
        self.wait_gone(instance.external_id)
        resources = self.driver.list_resources()
        self.assertEqual(1, len(resources))
        self.assertEqual('volume', resources[0].resource_type)
        self.assertEqual(node_id, resources[0].metadata[base.META_NODE_ID])
        self.assertEqual(instance.external_id,
                         resources[0].metadata[os_driver.META_SERVER])
        self.driver.delete_resource(resources[0])
        self.assertEqual(1, len(self.cloud.volumes))
        self.assertEqual([], self.driver.list_resources())


class TestQuota(OpenStackTestCase):

    def test_limits_minus_unmanaged(self):
        self.assertEqual(base.Quota(instances=10, cores=20, ram=51200),
                         self.driver.get_quota_limits())
        # ours: not subtracted (the launcher counts its own nodes)
        self.create('small')
        self.cloud.add_server('ours-leaked', flavor_id='4', metadata={
            base.META_NODE_ID: 'n', base.META_PROVIDER: PROVIDER})
        self.assertEqual(base.Quota(instances=10, cores=20, ram=51200),
                         self.driver.get_quota_limits())
        # not ours: another provider's, and no metadata at all
        self.cloud.add_server('other', flavor_id='3', metadata={
            base.META_NODE_ID: 'n', base.META_PROVIDER: 'other'})
        self.cloud.add_server('pet', flavor_id='1')
        self.assertEqual(base.Quota(instances=8, cores=17, ram=51200 - 4608),
                         self.driver.get_quota_limits())

    def test_unlimited(self):
        self.cloud.max_instances = -1
        self.cloud.max_ram = -1
        self.cloud.add_server('pet', flavor_id='1')
        self.assertEqual(base.Quota(instances=None, cores=19, ram=None),
                         self.driver.get_quota_limits())

    def test_label_quota_cached(self):
        quota = self.driver.get_quota_for_label(self.pool(),
                                                self.label('medium'))
        self.assertEqual(base.Quota(instances=1, cores=2, ram=4096), quota)
        quota = self.driver.get_quota_for_label(self.pool(),
                                                self.label('small'))
        self.assertEqual(base.Quota(instances=1, cores=1, ram=2048), quota)
        self.driver.get_quota_for_label(self.pool(), self.label('small'))
        self.assertEqual(1, self.cloud.calls['compute.flavors.detail'])


class TestRateLimit(OpenStackTestCase):

    def test_provider_rate_honoured(self):
        provider = dict(self.layout.providers[PROVIDER], rate=0.1)
        driver = self.make_driver(provider)
        start = time.monotonic()
        driver.list_instances()
        threads = [threading.Thread(target=driver.list_instances)
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        driver.list_instances()
        # five calls after the first, each 0.1s after the one before
        self.assertGreaterEqual(time.monotonic() - start, 0.49)

    def test_limiter_spaces_calls(self):
        now = [100.0]
        slept = []

        def sleep(seconds):
            slept.append(seconds)

        limiter = ratelimit.RateLimiter(2, clock=lambda: now[0], sleep=sleep)
        for _ in range(3):
            with limiter:
                pass
        self.assertEqual([2.0, 4.0], slept)
        now[0] = 200.0
        self.assertEqual(0, limiter.wait())
        self.assertEqual(2.0, limiter.reserve())

    def test_limiter_disabled(self):
        limiter = ratelimit.RateLimiter(0, sleep=self.fail)
        for _ in range(3):
            self.assertEqual(0, limiter.wait())
        self.assertRaises(ValueError, ratelimit.RateLimiter, -1)

    def test_limiter_threads(self):
        limiter = ratelimit.RateLimiter(0.02)
        starts = []
        lock = threading.Lock()

        @limiter
        def call():
            with lock:
                starts.append(time.monotonic())

        before = time.monotonic()
        threads = [threading.Thread(target=call) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(10, len(starts))
        # the last of ten calls starts no sooner than nine spaces later
        self.assertGreaterEqual(max(starts) - before, 0.18)
        # and the slots booked are spaced, whatever the threads' wake-ups
        slots = sorted(limiter.reserve() for _ in range(3))
        self.assertAlmostEqual(0.02, slots[1] - slots[0], delta=0.005)
        self.assertAlmostEqual(0.02, slots[2] - slots[1], delta=0.005)


class TestInstanceCache(OpenStackTestCase):
    """Many waiting nodes cost one list call per refresh, not one each."""

    BUILD_DELAY = 0.6
    NODES = 30
    INTERVAL = 0.1

    def test_many_nodes_one_list_call_per_refresh(self):
        from fleetflow import instance_cache
        from fleetflow import scheduler as ff_scheduler

        self.cloud.max_instances = self.cloud.max_cores = 1000
        self.cloud.max_ram = 10 ** 7
        lists = []
        real_list = self.driver.list_instances

        def counted_list():
            lists.append(time.monotonic())
            return real_list()

        self.useFixture(fixtures.MockPatchObject(
            self.driver, 'list_instances', side_effect=counted_list))
        scheduler = ff_scheduler.Scheduler()
        cache = instance_cache.InstanceCache(self.driver, scheduler,
                                             self.INTERVAL)
        scheduler.start()
        self.addCleanup(scheduler.stop)

        instances = [self.create('small') for _ in range(self.NODES)]
        self.cloud.reset_calls()
        start = time.monotonic()
        since = time.time()
        done = {i.external_id: threading.Event() for i in instances}

        def waiter(external_id):
            def check():
                known, instance = cache.lookup(external_id, since)
                if known and instance is not None and \
                        instance.state == base.ACTIVE:
                    done[external_id].set()
                else:
                    cache.watch(external_id,
                                instance_cache.state_of(instance)
                                if known else None, check)
            cache.watch(external_id, None, check)

        for instance in instances:
            waiter(instance.external_id)
        for external_id, event in done.items():
            self.assertTrue(event.wait(WAIT), external_id)
        elapsed = time.monotonic() - start

        list_calls = self.cloud.calls['compute.servers.detail']
        self.addDetail('list-calls', testtools.content.text_content(
            '%d nodes, %d list calls in %.2fs (interval %.2fs)'
            % (self.NODES, list_calls, elapsed, self.INTERVAL)))
        # every refresh is exactly one API call, and no node polled alone
        self.assertEqual(len(lists), list_calls)
        self.assertEqual(0, self.cloud.calls['compute.servers.get'])
        self.assertLessEqual(list_calls, elapsed / self.INTERVAL + 2)
        self.assertLess(list_calls, self.NODES)
        self.assertGreaterEqual(list_calls, 1)


class TestDriverListing(OpenStackTestCase):
    """list_instances is one API call however many servers there are."""

    def test_one_call_for_many_servers(self):
        for i in range(40):
            self.cloud.add_server('pet-%d' % i, flavor_id='1', metadata={
                base.META_NODE_ID: 'n%d' % i, base.META_POOL: 'main',
                base.META_PROVIDER: PROVIDER if i % 2 else 'other'})
        self.driver.list_instances()
        self.cloud.reset_calls()
        listed = self.driver.list_instances()
        self.assertEqual(20, len(listed))
        self.assertEqual({'compute.servers.detail': 1},
                         dict(self.cloud.calls))

    def test_pages_followed(self):
        self.cloud.page_size = 7
        for i in range(30):
            self.cloud.add_server('pet-%d' % i, flavor_id='1', metadata={
                base.META_NODE_ID: 'n%d' % i, base.META_POOL: 'main',
                base.META_PROVIDER: PROVIDER})
        listed = self.driver.list_instances()
        self.assertEqual(['n%d' % i for i in range(30)],
                         [i.node_id for i in listed])
        self.assertEqual(5, self.cloud.calls['compute.servers.detail'])
