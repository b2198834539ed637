"""The static driver, with real SSH servers on loopback ports as hosts."""

import glob
import logging
import os

import fixtures
from oslo_config import cfg
import testtools

from fleetflow import conf as fleetflow_conf
from fleetflow.drivers import base
from fleetflow.drivers import static
from fleetflow import exceptions
from fleetflow import keyscan
from fleetflow import layout
from tests import base as test_base
from tests.unit import ssh_fixture


class StaticDriverTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.log = self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.conf = cfg.ConfigOpts()
        fleetflow_conf.register_opts(self.conf)
        self.conf([])
        self.conf.set_override('state_path', self.tmp)
        self.conf.set_override('connect_timeout', 2.0, group='keyscan')
        key, private_text = ssh_fixture.client_key()
        self.key_file = os.path.join(self.tmp, 'id_ed25519')
        with open(os.path.join(self.key_file), 'w') as f:
            f.write(private_text)
        os.chmod(self.key_file, 0o600)
        authorized = [ssh_fixture.public_key(key)]
        # host one serves "small" twice at once; host two "small" and "big";
        # host three presents keys other than the ones the layout expects.
        self.one = self.useFixture(ssh_fixture.SSHServerFixture(
            authorized_keys=authorized, key_set='one'))
        self.two = self.useFixture(ssh_fixture.SSHServerFixture(
            authorized_keys=authorized, key_set='two',
            key_kinds=('ecdsa', 'rsa')))
        self.three = self.useFixture(ssh_fixture.SSHServerFixture(
            authorized_keys=authorized, key_set='three'))
        self.wrong_keys = [ssh_fixture.public_key(
            ssh_fixture.host_key('ed25519', 'not-three'))]
        self.layout_data = {
            'labels': [{'name': 'small'}, {'name': 'big'},
                       {'name': 'odd'}],
            'providers': [{
                'name': 'hosts',
                'driver': 'static',
                'private-key': self.key_file,
                'cleanup-command': 'touch cleaned-by-provider',
                'pools': [{
                    'name': 'main',
                    'cleanup-command': 'echo $PWD >> cleanups',
                    'labels': [{'name': 'small'}, {'name': 'big'}],
                    'nodes': [
                        {'name': '127.0.0.1',
                         'connection-port': self.one.port,
                         'labels': ['small'],
                         'max-parallel-jobs': 2,
                         'host-key': self.one.keys,
                         'username': self.one.username},
                        {'name': '127.0.0.1',
                         'connection-port': self.two.port,
                         'labels': ['small', 'big'],
                         'host-key': self.two.keys[0]},
                    ],
                }, {
                    'name': 'odd',
                    'labels': [{'name': 'odd'}],
                    'nodes': [
                        {'name': '127.0.0.1',
                         'connection-port': self.three.port,
                         'labels': 'odd',
                         'host-key': self.wrong_keys},
                    ],
                }],
            }],
        }
        self.driver = self.make_driver()

    def make_driver(self, data=None):
        self.layout = layout.Layout(data or self.layout_data)
        self.provider = self.layout.providers['hosts']
        return static.StaticDriver(self.provider, self.conf)

    def create(self, node_id, label='small', pool='main', driver=None):
        pool = self.layout.get_pool('hosts', pool)
        label = self.layout.pool_label(pool, label)
        metadata = {base.META_NODE_ID: node_id, base.META_POOL: pool['name'],
                    base.META_PROVIDER: 'hosts'}
        return (driver or self.driver).create_instance(
            node_id, pool, label, metadata)

    def cleanups(self, server):
        path = os.path.join(server.directory, 'cleanups')
        if not os.path.exists(path):
            return 0
        with open(path) as f:
            return len(f.read().splitlines())


class TestStaticDriver(StaticDriverTestCase):

    def test_allocate_up_to_max_parallel_jobs(self):
        self.assertEqual(base.Quota(instances=4),
                         self.driver.get_quota_limits())
        instances = [self.create('node-%d' % n) for n in range(3)]
        self.assertEqual({base.ACTIVE}, {i.state for i in instances})
        ports = sorted(i.connection_port for i in instances)
        self.assertEqual(sorted([self.one.port, self.one.port,
                                 self.two.port]), ports)
        self.assertRaises(base.QuotaError, self.create, 'node-3')
        # "big" has its own host, whose one slot is taken by now
        self.assertRaises(base.QuotaError, self.create, 'node-4', 'big')
        self.driver.delete_instance(instances[0].external_id)
        self.create('node-5')

    def test_instance_fields(self):
        instance = self.create('node-1', 'big')
        self.assertEqual('127.0.0.1', instance.interface_ip)
        self.assertEqual('127.0.0.1', instance.public_ipv4)
        self.assertEqual(self.two.port, instance.connection_port)
        self.assertEqual('ssh', instance.connection_type)
        self.assertEqual([self.two.keys[0]], instance.host_keys)
        self.assertEqual('node-1', instance.node_id)
        self.assertEqual(instance, test_base.listed(
            self.driver, instance.external_id))

    def test_same_node_gets_same_allocation(self):
        first = self.create('node-1')
        self.assertEqual(first.external_id,
                         self.create('node-1').external_id)
        self.assertEqual(1, len(self.driver.list_instances()))

    def test_allocations_survive_restart(self):
        first = self.create('node-1')
        second = self.create('node-2', 'big')
        restarted = self.make_driver()
        listed = {i.external_id: i for i in restarted.list_instances()}
        self.assertEqual({first.external_id, second.external_id},
                         set(listed))
        self.assertEqual(second.metadata,
                         listed[second.external_id].metadata)
        self.assertEqual(second.external_id,
                         restarted.find_instance('node-2').external_id)
        # slots taken before the restart stay taken
        self.create('node-3', driver=restarted)
        self.assertRaises(base.QuotaError, self.create, 'node-4',
                          driver=restarted)

    def test_expected_host_keys_through_keyscan(self):
        scanner = keyscan.KeyScanner(workers=2, connect_timeout=5)
        self.addCleanup(scanner.stop)
        for label, pool in (('small', 'main'), ('big', 'main')):
            instance = self.create('node-' + label, label, pool)
            keys = scanner.scan(instance.interface_ip,
                                instance.connection_port,
                                instance.connection_type,
                                expected_keys=instance.host_keys)
            self.assertTrue(set(instance.host_keys) <= set(keys))
        instance = self.create('node-odd', 'odd', 'odd')
        e = self.assertRaises(exceptions.HostKeyMismatch, scanner.scan,
                              instance.interface_ip,
                              instance.connection_port,
                              expected_keys=instance.host_keys)
        self.assertIn('127.0.0.1:%d' % self.three.port, str(e))

    def test_cleanup_command_runs_over_ssh(self):
        instance = self.create('node-1', 'big')
        self.driver.delete_instance(instance.external_id)
        self.assertEqual(1, self.cleanups(self.two))
        self.assertIsNone(test_base.listed(self.driver, instance.external_id))
        self.assertRaises(base.NotFound, self.driver.delete_instance,
                          instance.external_id)
        self.create('node-2', 'big')

    def test_cleanup_refuses_a_wrong_host_key(self):
        instance = self.create('node-odd', 'odd', 'odd')
        e = self.assertRaises(base.DriverError, self.driver.delete_instance,
                              instance.external_id)
        self.assertIn('host key', str(e))
        self.assertIn('SECURITY', self.log.output)
        self.assertFalse(os.path.exists(
            os.path.join(self.three.directory, 'cleaned-by-provider')))
        # the slot stays taken until a cleanup succeeds
        self.assertEqual(base.DELETING, test_base.listed(
            self.driver, instance.external_id).state)
        self.assertRaises(base.QuotaError, self.create, 'other', 'odd', 'odd')

    def test_failed_cleanup_keeps_the_slot(self):
        self.layout_data['providers'][0]['pools'][0]['cleanup-command'] = (
            'echo broken >&2; exit 3')
        driver = self.make_driver()
        instance = self.create('node-1', 'big', driver=driver)
        e = self.assertRaises(base.DriverError, driver.delete_instance,
                              instance.external_id)
        self.assertIn('exited 3', str(e))
        self.assertIn('broken', str(e))
        self.assertEqual(base.DELETING,
                         test_base.listed(driver, instance.external_id).state)
        self.assertRaises(base.QuotaError, self.create, 'node-2', 'big',
                          driver=driver)

    def test_provider_cleanup_command_and_trust_on_first_use(self):
        self.layout_data['providers'][0]['pools'][1]['nodes'][0].pop(
            'host-key')
        driver = self.make_driver()
        instance = self.create('node-1', 'odd', 'odd', driver=driver)
        self.assertIsNone(instance.host_keys)
        driver.delete_instance(instance.external_id)
        self.assertTrue(os.path.exists(
            os.path.join(self.three.directory, 'cleaned-by-provider')))
        self.assertIn('trusting', self.log.output)
        # the keys seen are now expected of the host...
        instance = self.create('node-2', 'odd', 'odd', driver=driver)
        self.assertEqual(self.three.keys, instance.host_keys)
        # ...so a host that comes back with other keys is refused
        self.three.start(key_set='three-reinstalled')
        self.assertRaises(base.DriverError, driver.delete_instance,
                          instance.external_id)

    def test_winrm_host_gets_no_cleanup(self):
        node = self.layout_data['providers'][0]['pools'][1]['nodes'][0]
        node['connection-type'] = 'winrm'
        driver = self.make_driver()
        instance = self.create('node-1', 'odd', 'odd', driver=driver)
        self.assertEqual('winrm', instance.connection_type)
        driver.delete_instance(instance.external_id)
        self.assertEqual([], driver.list_instances())

    def test_host_out_of_service_and_back(self):
        self.assertEqual({self.one.port: True, self.two.port: True,
                          self.three.port: True},
                         {int(k.rsplit(':', 1)[1]): v
                          for k, v in self.driver.check_hosts().items()})
        self.two.stop()
        answers = self.driver.check_hosts()
        self.assertFalse(answers[static.host_id('127.0.0.1',
                                                self.two.port)])
        self.assertIn(static.host_id('127.0.0.1', self.two.port),
                      self.driver.out_of_service())
        self.assertIn('does not answer', self.log.output)
        # no new allocations on it, also for a driver restarted meanwhile
        self.assertRaises(base.QuotaError, self.create, 'node-1', 'big')
        self.assertRaises(base.QuotaError, self.create, 'node-1', 'big',
                          driver=self.make_driver())
        self.create('node-2', 'small')
        self.create('node-3', 'small')
        self.assertRaises(base.QuotaError, self.create, 'node-4', 'small')

        self.two.start()
        self.assertTrue(all(self.driver.check_hosts().values()))
        self.assertEqual({}, self.driver.out_of_service())
        self.assertIn('back in service', self.log.output)
        instance = self.create('node-1', 'big')
        self.assertEqual(self.two.port, instance.connection_port)

    def test_label_not_served_by_pool(self):
        pool = self.layout.get_pool('hosts', 'odd')
        self.assertRaises(base.DriverError, self.driver.create_instance,
                          'node-1', pool, {'name': 'small'}, {})

    def test_state_under_provider_state_path(self):
        self.create('node-1')
        files = glob.glob(os.path.join(self.tmp, 'static-hosts', '*.json'))
        self.assertEqual(['allocations.json'],
                         [os.path.basename(f) for f in files])


class TestStaticLayout(testtools.TestCase):

    def layout(self, node, **pool):
        return {
            'labels': [{'name': 'small'}],
            'providers': [{'name': 'hosts', 'driver': 'static', 'pools': [
                dict({'name': 'main', 'labels': [{'name': 'small'}],
                      'nodes': [node]}, **pool)]}],
        }

    def test_node_keys(self):
        node = {'name': 'host.example', 'labels': ['small'],
                'username': 'zuul', 'connection-port': 2222,
                'connection-type': 'network_cli', 'max-parallel-jobs': 3,
                'host-key': ssh_fixture.public_key(
                    ssh_fixture.host_key('ed25519'))}
        checked = layout.Layout(self.layout(node, **{
            'cleanup-command': 'true'}))
        self.assertEqual(node, checked.providers['hosts']['pools'][0][
            'nodes'][0])

    def test_unknown_node_key_refused_by_name(self):
        e = self.assertRaises(exceptions.ConfigError, layout.Layout,
                              self.layout({'name': 'h', 'labels': 'small',
                                           'max-parallel-job': 2}))
        self.assertIn('max-parallel-job', str(e))

    def test_bad_host_key_refused(self):
        e = self.assertRaises(exceptions.ConfigError, layout.Layout,
                              self.layout({'name': 'h', 'labels': 'small',
                                           'host-key': 'ssh-ed25519'}))
        self.assertIn('host-key', str(e))

    def test_name_cannot_escape_the_state_path(self):
        conf = cfg.ConfigOpts()
        fleetflow_conf.register_opts(conf)
        tmp = self.useFixture(fixtures.TempDir()).path
        conf.set_override('state_path', os.path.join(tmp, 'state'))
        self.addCleanup(conf.clear_override, 'state_path')
        data = self.layout({'name': 'h', 'labels': 'small'})
        data['providers'][0]['name'] = '../../escaped'
        self.assertIn("providers[0].name: '../../escaped' is not a safe name",
                      str(self.assertRaises(exceptions.ConfigError,
                                            layout.Layout, data)))
        # and the driver, given such an entry all the same
        data['providers'][0]['name'] = 'hosts'
        provider = dict(layout.Layout(data).providers['hosts'],
                        name='../../escaped')
        e = self.assertRaises(exceptions.ConfigError, static.StaticDriver,
                              provider, conf)
        self.assertIn("provider '../../escaped'", str(e))
        self.assertEqual([], os.listdir(tmp))

    def test_duplicate_host_refused(self):
        conf = cfg.ConfigOpts()
        fleetflow_conf.register_opts(conf)
        node = {'name': 'h', 'labels': 'small'}
        data = self.layout(node)
        data['providers'][0]['pools'][0]['nodes'].append(node)
        provider = layout.Layout(data).providers['hosts']
        self.assertRaises(exceptions.ConfigError, static.StaticDriver,
                          provider, conf)

    def test_nodepools_pool_takes_its_labels_from_its_hosts(self):
        data = self.layout({'name': 'h1', 'labels': 'small big',
                            'username': 'admin', 'python-path': '/bin/py',
                            'shell-type': 'sh', 'timeout': 13})
        del data['providers'][0]['pools'][0]['labels']
        data['labels'].append({'name': 'big'})
        checked = layout.Layout(data)
        pool = checked.get_pool('hosts', 'main')
        self.assertEqual(['small', 'big'],
                         [label['name'] for label in pool['labels']])
        big = checked.pool_label(pool, 'big')
        self.assertEqual(('admin', '/bin/py', 'sh', True),
                         (big['username'], big['python-path'],
                          big['shell-type'], big['host-key-checking']))
        self.assertEqual([('hosts', 'main')],
                         [(p['name'], pl['name'])
                          for p, pl in checked.pools_serving(['big'])])

    def test_host_timeout_is_its_check_timeout(self):
        conf = cfg.ConfigOpts()
        fleetflow_conf.register_opts(conf)
        conf([])
        conf.set_override('state_path', self.useFixture(
            fixtures.TempDir()).path)
        data = self.layout({'name': '127.0.0.1', 'labels': 'small',
                            'timeout': 0.5})
        driver = static.StaticDriver(
            layout.Layout(data).providers['hosts'], conf)
        checked = []
        self.useFixture(fixtures.MonkeyPatch(
            'fleetflow.keyscan.check_port',
            lambda host, port, timeout: checked.append(timeout)))
        driver.check_hosts()
        self.assertEqual([0.5], checked)

    def test_host_key_checking_off_only_when_every_host_has_it_off(self):
        data = self.layout({'name': 'h1', 'labels': 'small',
                            'host-key-checking': False})
        del data['providers'][0]['pools'][0]['labels']
        pool = layout.Layout(data).get_pool('hosts', 'main')
        self.assertFalse(pool['labels'][0]['host-key-checking'])
        data['providers'][0]['pools'][0]['nodes'].append(
            {'name': 'h2', 'labels': ['small']})
        pool = layout.Layout(data).get_pool('hosts', 'main')
        self.assertTrue(pool['labels'][0]['host-key-checking'])
