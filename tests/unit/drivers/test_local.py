"""The local driver: instances that are real SSH server processes."""

import concurrent.futures
import errno
import getpass
import logging
import os
import signal
import socket
import time

import fixtures
from oslo_config import cfg
import paramiko
import testtools

from fleetflow import conf as fleetflow_conf
from fleetflow.drivers import base
from fleetflow.drivers import local
from fleetflow.drivers import local_server
from fleetflow import exceptions
from fleetflow import keyscan
from fleetflow import layout
from tests import base as test_base
from tests.unit import ssh_fixture

NODE_META = {base.META_NODE_ID: 'node-1', base.META_POOL: 'main',
             base.META_PROVIDER: 'here'}


def pid_running(pid):
    """Whether pid is a live (not zombie) process."""
    try:
        with open('/proc/%d/stat' % pid, 'rb') as f:
            return f.read().rsplit(b')', 1)[1].split()[0] != b'Z'
    except (FileNotFoundError, ProcessLookupError):
        return False


class LocalDriverTestCase(testtools.TestCase):

    boot_delay = 0.3
    max_instances = 3

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.conf = cfg.ConfigOpts()
        fleetflow_conf.register_opts(self.conf)
        self.conf([])
        self.conf.set_override('state_path', self.tmp)
        self.key, _ = ssh_fixture.client_key()
        self.second_key, _ = ssh_fixture.client_key('second')
        pub_path = os.path.join(self.tmp, 'second.pub')
        with open(pub_path, 'w') as f:
            f.write('# a comment\n%s second@example\n'
                    % ssh_fixture.public_key(self.second_key))
        self.layout = layout.Layout({
            'labels': [{'name': 'small'}],
            'providers': [{
                'name': 'here',
                'driver': 'local',
                'boot-delay': self.boot_delay,
                'max-instances': self.max_instances,
                'authorized-keys': [ssh_fixture.public_key(self.key),
                                    pub_path],
                'host-key-types': ['ed25519', 'ecdsa', 'rsa'],
                'pools': [{'name': 'main',
                           'labels': [{'name': 'small',
                                       'username': 'zuul'}]}],
            }],
        })
        self.provider = self.layout.providers['here']
        self.pool = self.provider['pools'][0]
        self.label = self.pool['labels'][0]
        self.driver = self.make_driver()

    def make_driver(self):
        return local.LocalDriver(self.provider, self.conf)

    def create(self, node_id='node-1', driver=None):
        driver = driver or self.driver
        instance = driver.create_instance(
            node_id, self.pool, self.label,
            dict(NODE_META, **{base.META_NODE_ID: node_id}))
        self.addCleanup(self._destroy, instance.external_id)
        return instance

    def _destroy(self, external_id):
        """Delete an instance the test left, and make sure its pid is gone."""
        info = self.driver._read_info_quiet(external_id)
        pid = info.get('pid')
        try:
            self.driver.delete_instance(external_id)
        except base.NotFound:
            pass
        if pid and pid_running(pid):
            os.killpg(pid, signal.SIGKILL)

    def wait_active(self, external_id, driver=None):
        driver = driver or self.driver
        deadline = time.monotonic() + 30
        while True:
            instance = test_base.listed(driver, external_id)
            if instance.state == base.ACTIVE:
                return instance
            self.assertEqual(base.BUILDING, instance.state, instance.fault)
            self.assertLess(time.monotonic(), deadline, 'never active')
            time.sleep(0.05)

    def wait_ssh(self, instance, scanner=None):
        """Scan until SSH answers, as the launch flow's retry would."""
        deadline = time.monotonic() + 30
        while True:
            try:
                if scanner:
                    return scanner.scan(
                        instance.interface_ip, instance.connection_port,
                        expected_keys=instance.host_keys)
                return keyscan.scan_host_keys(instance.interface_ip,
                                              instance.connection_port)
            except exceptions.HostUnreachable:
                self.assertLess(time.monotonic(), deadline, 'no SSH')
                time.sleep(0.1)

    def started(self):
        instance = self.wait_active(self.create().external_id)
        keys = self.wait_ssh(instance)
        return instance, keys


class TestLocalDriver(LocalDriverTestCase):

    def test_create_scan_login_run(self):
        instance = self.create()
        self.assertEqual(base.BUILDING, instance.state)
        self.assertEqual('127.0.0.1', instance.interface_ip)
        self.assertEqual('zuul', instance.username)
        self.assertEqual('node-1', instance.node_id)
        instance = self.wait_active(instance.external_id)
        self.assertIsInstance(instance.connection_port, int)

        scanner = keyscan.KeyScanner(workers=2, connect_timeout=5)
        self.addCleanup(scanner.stop)
        keys = self.wait_ssh(instance, scanner)
        self.assertEqual(['ecdsa-sha2-nistp256', 'ssh-ed25519', 'ssh-rsa'],
                         [k.split()[0] for k in keys])
        self.assertEqual(keys, test_base.listed(
            self.driver, instance.external_id).host_keys)

        status, out = local.run_command(
            '127.0.0.1', instance.connection_port, 'zuul', self.key, keys,
            'echo hello > f && cat f', timeout=10)
        self.assertEqual((0, b'hello\n'), (status, out))
        home = os.path.join(self.driver.state_path, instance.external_id,
                            'home')
        with open(os.path.join(home, 'f')) as f:
            self.assertEqual('hello\n', f.read())
        status, out = local.run_command(
            '127.0.0.1', instance.connection_port, 'zuul', self.key, keys,
            'pwd; echo oops >&2; exit 4', timeout=10)
        self.assertEqual((4, (home + '\n').encode()), (status, out))

    def test_commands_do_not_see_the_launcher_environment(self):
        self.useFixture(fixtures.EnvironmentVariable('FLEETFLOW_SECRET',
                                                     'hush'))
        instance, keys = self.started()
        status, out = local.run_command(
            '127.0.0.1', instance.connection_port, 'zuul', self.key, keys,
            'echo "[$FLEETFLOW_SECRET] $USER"', timeout=10)
        self.assertEqual((0, b'[] zuul\n'), (status, out))

    def test_key_from_pub_file_logs_in(self):
        instance, keys = self.started()
        self.assertEqual((0, b'ok\n'), local.run_command(
            '127.0.0.1', instance.connection_port, 'zuul', self.second_key,
            keys, 'echo ok', timeout=10))

    def test_refuses_password_none_and_unknown_keys(self):
        instance, keys = self.started()
        transport = paramiko.Transport(('127.0.0.1',
                                        instance.connection_port))
        self.addCleanup(transport.close)
        transport.start_client(timeout=10)
        e = self.assertRaises(paramiko.BadAuthenticationType,
                              transport.auth_password, 'zuul', 'secret')
        self.assertEqual(['publickey'], e.allowed_types)
        e = self.assertRaises(paramiko.BadAuthenticationType,
                              transport.auth_none, 'zuul')
        self.assertEqual(['publickey'], e.allowed_types)
        stranger, _ = ssh_fixture.client_key('stranger')
        self.assertRaises(paramiko.AuthenticationException,
                          transport.auth_publickey, 'zuul', stranger)
        self.assertFalse(transport.is_authenticated())
        # the right key, but not for another user
        self.assertRaises(paramiko.AuthenticationException,
                          local.run_command, '127.0.0.1',
                          instance.connection_port, 'root', self.key, keys,
                          'true', 10)

    def test_strict_host_key_checking(self):
        instance, keys = self.started()
        other = ssh_fixture.public_key(
            ssh_fixture.host_key('ed25519', 'other'))
        self.assertRaises(paramiko.BadHostKeyException, local.run_command,
                          '127.0.0.1', instance.connection_port, 'zuul',
                          self.key, [other], 'true', 10)

    def test_refused_until_booted(self):
        instance = self.wait_active(self.create().external_id)
        self.assertRaises(exceptions.HostUnreachable,
                          keyscan.scan_host_keys, '127.0.0.1',
                          instance.connection_port)
        self.wait_ssh(instance)

    def test_list_after_restart(self):
        first = self.create('node-1')
        second = self.create('node-2')
        self.wait_active(first.external_id)
        restarted = self.make_driver()
        instances = {i.external_id: i for i in restarted.list_instances()}
        self.assertEqual({first.external_id, second.external_id},
                         set(instances))
        self.assertEqual(dict(NODE_META, **{base.META_NODE_ID: 'node-2'}),
                         instances[second.external_id].metadata)
        self.assertEqual(second.external_id,
                         restarted.find_instance('node-2').external_id)
        instance = self.wait_active(second.external_id, restarted)
        self.wait_ssh(instance)
        restarted.delete_instance(first.external_id)
        self.assertEqual([second.external_id],
                         [i.external_id for i in self.driver.list_instances()])

    def test_other_provider_instances_not_listed(self):
        self.create()
        other = local.LocalDriver(dict(self.provider, name='elsewhere'),
                                  self.conf)
        self.assertEqual(self.driver.state_path, other.state_path)
        self.assertEqual([], other.list_instances())

    def test_delete_stops_process_and_removes_directory(self):
        instance, keys = self.started()
        directory = os.path.join(self.driver.state_path,
                                 instance.external_id)
        pid = self.driver._read_info(instance.external_id)['pid']
        self.assertTrue(pid_running(pid))
        # a command left running on the instance goes too
        local.run_command('127.0.0.1', instance.connection_port, 'zuul',
                          self.key, keys, 'sleep 300 >/dev/null 2>&1 &', 10)
        self.driver.delete_instance(instance.external_id)
        self.assertFalse(pid_running(pid))
        self.assertFalse(os.path.exists(directory))
        self.assertIsNone(test_base.listed(self.driver, instance.external_id))
        self.assertRaises(base.NotFound, self.driver.delete_instance,
                          instance.external_id)
        self.assertRaises(exceptions.HostUnreachable,
                          keyscan.scan_host_keys, '127.0.0.1',
                          instance.connection_port)

    def test_delete_by_restarted_driver(self):
        instance = self.wait_active(self.create().external_id)
        pid = self.driver._read_info(instance.external_id)['pid']
        self.make_driver().delete_instance(instance.external_id)
        self.assertFalse(pid_running(pid))

    def test_dead_process_is_error(self):
        instance = self.wait_active(self.create().external_id)
        pid = self.driver._read_info(instance.external_id)['pid']
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            listed = test_base.listed(self.driver, instance.external_id)
            if listed.state == base.ERROR:
                break
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        self.assertIn('not running', listed.fault)
        self.driver.delete_instance(instance.external_id)

    def test_quota(self):
        self.assertEqual(base.Quota(instances=3),
                         self.driver.get_quota_limits())
        for n in range(3):
            self.create('node-%d' % n)
        self.assertRaises(base.QuotaError, self.create, 'node-3')
        self.driver.delete_instance(
            self.driver.list_instances()[0].external_id)
        self.create('node-4')

    def test_quota_under_concurrent_creates(self):
        def create(n):
            try:
                return self.create('node-%d' % n, self.make_driver())
            except base.QuotaError:
                return None

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(create, range(8)))
        self.assertEqual(3, len([r for r in results if r is not None]))
        self.assertEqual(3, len(self.driver.list_instances()))

    def test_not_found(self):
        for bad in ('0' * 32, '../etc', '', None):
            self.assertRaises(base.NotFound, self.driver.delete_instance,
                              bad)

    def test_active_only_with_every_host_key(self):
        instance = self.wait_active(self.create().external_id)
        self.assertTrue(instance.host_keys_exact)
        self.assertEqual(3, len(instance.host_keys))
        directory = os.path.join(self.driver.state_path,
                                 instance.external_id)
        # as between the port file and the key files of a booting server
        os.rename(os.path.join(directory, 'ssh_host_rsa_key.pub'),
                  os.path.join(directory, 'rsa.pub'))
        instance = test_base.listed(self.driver, instance.external_id)
        self.assertEqual(base.BUILDING, instance.state)
        self.assertIsNone(instance.host_keys)

    def test_extra_host_key_refused(self):
        instance = self.wait_active(self.create().external_id)
        scanner = keyscan.KeyScanner(workers=2, connect_timeout=5)
        self.addCleanup(scanner.stop)
        self.wait_ssh(instance, scanner)
        e = self.assertRaises(
            exceptions.HostKeyMismatch, scanner.scan,
            instance.interface_ip, instance.connection_port,
            expected_keys=instance.host_keys[:2],
            exact=instance.host_keys_exact)
        self.assertIn('unexpected', str(e))

    def test_state_files_private(self):
        instance = self.create()
        directory = os.path.join(self.driver.state_path,
                                 instance.external_id)
        self.assertEqual(0o700, os.stat(self.driver.state_path).st_mode
                         & 0o777)
        self.assertEqual(0o700, os.stat(directory).st_mode & 0o777)
        for name in ('instance.json', 'authorized_keys', '.lock'):
            path = os.path.join(directory if name != '.lock'
                                else self.driver.state_path, name)
            self.assertEqual(0o600, os.stat(path).st_mode & 0o777, name)

    def test_cleanup_only_its_own_leftovers(self):
        old = time.time() - 3600
        names = ('.tmp-build', '.tmp-' + 'a' * 32, '.deleting-' + 'b' * 32,
                 '.tmp-' + 'c' * 32)
        for name in names[:3]:
            os.mkdir(os.path.join(self.driver.state_path, name))
        # a link to another program's directory, named as a leftover
        elsewhere = self.useFixture(fixtures.TempDir()).path
        os.symlink(elsewhere, os.path.join(self.driver.state_path,
                                           names[3]))
        for name in names:
            os.utime(os.path.join(self.driver.state_path, name), (old, old),
                     follow_symlinks=False)
        self.create()
        left = os.listdir(self.driver.state_path)
        self.assertIn('.tmp-build', left)
        self.assertIn(names[3], left)
        self.assertTrue(os.path.isdir(elsewhere))
        self.assertNotIn(names[1], left)
        self.assertNotIn(names[2], left)

    def test_default_state_path_and_user(self):
        driver = local.LocalDriver({'name': 'bare', 'driver': 'local'},
                                   self.conf)
        self.assertEqual(os.path.join(self.tmp, 'local'), driver.state_path)
        self.assertIsNone(driver.get_quota_limits().instances)
        instance = driver.create_instance('n', {'name': 'p'},
                                          {'name': 'small'}, {})
        self.addCleanup(driver.delete_instance, instance.external_id)
        self.assertEqual(getpass.getuser(), instance.username)


class TestLocalLayout(testtools.TestCase):

    def test_unknown_key_refused_by_name(self):
        e = self.assertRaises(exceptions.ConfigError, layout.Layout, {
            'providers': [{'name': 'here', 'driver': 'local',
                           'boot-dealy': 1}]})
        self.assertIn('boot-dealy', str(e))

    def test_bad_values(self):
        for key, value in (('boot-delay', -1), ('max-instances', 'x'),
                           ('host-key-types', ['dsa'])):
            e = self.assertRaises(exceptions.ConfigError, layout.Layout, {
                'providers': [{'name': 'here', 'driver': 'local',
                               key: value}]})
            self.assertIn(key, str(e))

    def test_unreadable_authorized_keys(self):
        conf = cfg.ConfigOpts()
        fleetflow_conf.register_opts(conf)
        self.assertRaises(exceptions.ConfigError, local.LocalDriver,
                          {'name': 'here', 'authorized-keys': ['/nope.pub']},
                          conf)


class TestReservedPort(testtools.TestCase):

    def test_no_other_socket_binds_a_reserved_port(self):
        sock = local_server.bind_loopback()
        self.addCleanup(sock.close)
        port = sock.getsockname()[1]
        other = socket.socket()
        self.addCleanup(other.close)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        e = self.assertRaises(OSError, other.bind, ('127.0.0.1', port))
        self.assertEqual(errno.EADDRINUSE, e.errno)
