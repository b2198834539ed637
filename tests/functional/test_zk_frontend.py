"""Zuul's nodepool protocol against a fleetflow launcher, over TLS.

The launcher process serves NodeRequests from a real ZooKeeper through its
TLS port (``tools/test-servers``: 127.0.0.1:2281, certificates made by
``tools/test-tls``); Zuul's part is played by nodepool 11.0.0's own client
(``nodepool.zk.zookeeper.ZooKeeper``) in its own virtualenv
(``tools/nodepool-client-venv``), driven as a child process
(:class:`fleetflow.bench.zk_requester.Requester`). Each test has a chroot
of its own.
"""

import getpass
import json
import os
import signal
import subprocess
import uuid

import fixtures
from kazoo import client as kazoo_client

from fleetflow.bench import zk_requester
from fleetflow.cmd import demo
from fleetflow.drivers import local
from fleetflow import exceptions
from fleetflow.zk import connection
from tests import board_servers
from tests.functional import test_launcher

TLS_DIR = os.environ.get('FLEETFLOW_TEST_ZK_TLS',
                         '/etc/zookeeper/fleetflow-test-tls')
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
#: the virtualenvs of Zuul's part: nodepool's client, and Zuul's
CLIENTS = {
    'nodepool': os.environ.get('FLEETFLOW_TEST_NODEPOOL_CLIENT',
                               os.path.join(ROOT, '.nodepool-client')),
    'zuul': os.environ.get('FLEETFLOW_TEST_ZUUL_CLIENT',
                           os.path.join(ROOT, '.zuul-client')),
}
TOOLS = {'nodepool': 'tools/nodepool-client-venv',
         'zuul': 'tools/zuul-client-venv'}
#: what Zuul's executor is given of a node, and must find filled
CONNECTION_FIELDS = ('interface_ip', 'connection_port', 'ssh_port',
                     'username', 'connection_type', 'host_keys',
                     'python_path', 'provider', 'pool', 'type',
                     'allocated_to', 'launcher', 'resources', 'external_id',
                     'created_time', 'state_time')


def wait_for(predicate, timeout=60, message=None):
    return test_launcher.wait_for(predicate, timeout=timeout,
                                  message=message)


class ZooKeeperTestCase(test_launcher.LauncherTestCase):

    TIMEOUT = 240
    #: whose client plays Zuul's part (:data:`CLIENTS`)
    CLIENT = 'nodepool'

    def setUp(self):
        super().setUp()
        self.address = board_servers.address(self, 'zookeeper-tls')
        self.tls = tuple(os.path.join(TLS_DIR, name)
                         for name in ('client.pem', 'client.key', 'ca.pem'))
        venv = CLIENTS[self.CLIENT]
        self.python = os.path.join(venv, 'bin', 'python')
        if not os.path.exists(self.python):
            message = ('no %s client virtualenv at %s: run %s'
                       % (self.CLIENT, venv, TOOLS[self.CLIENT]))
            if os.environ.get('CI'):
                self.fail(message)
            self.skipTest(message)
        self.chroot = '/fleetflow-test-%s' % uuid.uuid4().hex[:12]
        admin = kazoo_client.KazooClient(
            hosts=self.address, use_ssl=True, verify_certs=True,
            certfile=self.tls[0], keyfile=self.tls[1], ca=self.tls[2])
        admin.start(timeout=30)
        self.addCleanup(admin.close)
        self.addCleanup(admin.stop)
        admin.ensure_path(self.chroot)
        self.addCleanup(admin.delete, self.chroot, recursive=True)
        self.admin = admin

    def settings(self, **tls):
        """The layout's ZooKeeper settings (``Layout.zookeeper``)."""
        host, port = self.address.rsplit(':', 1)
        return {'servers': [{'host': host, 'port': int(port),
                             'chroot': self.chroot}],
                'tls': dict(dict(zip(('cert', 'key', 'ca'), self.tls)),
                            **tls),
                'timeout': 10.0}

    def zookeeper_layout(self, data):
        settings = self.settings()
        return dict(data, **{'zookeeper-servers': settings['servers'],
                             'zookeeper-tls': settings['tls'],
                             'zookeeper-timeout': settings['timeout']})

    def start_zk(self, layout_data=None, launch=True, conf=None,
                 **layout_args):
        layout_data = layout_data or test_launcher.layout(**layout_args)
        options = {'interval': 0.1, 'cleanup_interval': 0.5}
        options.update(conf or {})
        return self.start(layout_data=self.zookeeper_layout(layout_data),
                          conf={'zookeeper': options}, launch=launch)

    def zuul(self):
        """Zuul's side: nodepool's client in a child process."""
        requester = zk_requester.Requester(
            self.python, self.address + self.chroot, self.tls, timeout=10,
            client=self.CLIENT)
        self.addCleanup(requester.close)
        return requester

    def registered_pools(self, zuul):
        return wait_for(lambda: zuul.call('pools'),
                        message='no pool registered')

    def fulfilled(self, zuul, labels, **kwargs):
        request_id = zuul.call('request', labels=labels, **kwargs)
        data = zuul.call('wait', id=request_id, timeout=60)
        self.assertEqual('fulfilled', data['state'], data)
        return request_id, data

    def wait_gone(self, zuul, node_ids):
        wait_for(lambda: all(zuul.call('node', id=node_id) is None
                             for node_id in node_ids),
                 message='node znodes %s still there' % node_ids)

    def store_node(self, znode):
        return self.client.get_node(znode['driver_data']['fleetflow-node'])


class TestZooKeeperLocal(ZooKeeperTestCase):
    """Real SSH servers on loopback (the local driver)."""

    def driver(self, provider):
        """No fake cloud here: the local driver's instances are processes."""
        return None

    def test_two_nodes_over_ssh_then_used_and_deleted(self):
        path = self.useFixture(fixtures.TempDir()).path
        pkey, public = demo.make_key(path)
        layout_data = {
            'labels': [{'name': 'local'}],
            'providers': [{
                'name': 'local', 'driver': 'local',
                'authorized-keys': [public], 'max-instances': 4,
                'boot-timeout': 60,
                'pools': [{
                    'name': 'main', 'host-key-checking': True,
                    'node-attributes': {'executor-zone': 'loopback'},
                    'labels': [{'name': 'local', 'username':
                                getpass.getuser(),
                                'python-path': '/usr/bin/python3',
                                'shell-type': 'bash'}]}]}]}
        self.start_zk(layout_data)
        zuul = self.zuul()
        pools = self.registered_pools(zuul)
        self.assertEqual([['local']], [p['supported_labels'] for p in pools])
        request_id, data = self.fulfilled(zuul, ['local', 'local'])
        self.assertEqual(2, len(data['nodes']))
        nodes = zuul.call('accept', id=request_id)
        self.assertIsNone(zuul.call('request_data', id=request_id))
        for node in nodes:
            for field in CONNECTION_FIELDS:
                self.assertTrue(node[field], '%s: %r' % (field, node))
            self.assertEqual('ready', node['state'])
            self.assertEqual(request_id, node['allocated_to'])
            self.assertEqual(['local'], node['type'])
            self.assertEqual(('local', 'main'),
                             (node['provider'], node['pool']))
            self.assertEqual(pools[0]['id'], node['launcher'])
            self.assertEqual('/usr/bin/python3', node['python_path'])
            self.assertEqual('bash', node['shell_type'])
            self.assertEqual({'executor-zone': 'loopback'},
                             node['attributes'])
            self.assertEqual(1, node['resources']['instances'])
            store_node = self.store_node(node)
            self.assertEqual(store_node['host_keys'], node['host_keys'])
            status, out = local.run_command(
                node['interface_ip'], node['connection_port'],
                node['username'], pkey, node['host_keys'],
                'echo node %s' % node['id'])
            self.assertEqual((0, b'node %s\n' % node['id'].encode()),
                             (status, out))
        ids = [node['id'] for node in nodes]
        zuul.call('use', nodes=ids)
        self.assertEqual(['in-use', 'in-use'],
                         [zuul.call('node', id=i)['state'] for i in ids])
        store_ids = [node['driver_data']['fleetflow-node'] for node in nodes]
        zuul.call('give_back', nodes=ids)
        self.wait_gone(zuul, ids)
        for node_id in store_ids:
            self.client.wait_node_gone(node_id, timeout=60)
        wait_for(lambda: not self.client.list_requests(),
                 message='the store request is still there')


class TestZooKeeperFake(ZooKeeperTestCase):
    """The fake cloud, whose instance history the test reads."""

    def test_unknown_label_fails_once_every_pool_declined(self):
        self.start_zk()
        zuul = self.zuul()
        request_id = zuul.call('request', labels=['small', 'no-such-label'])
        data = zuul.call('wait', id=request_id, timeout=60)
        self.assertEqual('failed', data['state'])
        self.assertEqual(sorted(p['id'] for p in zuul.call('pools')),
                         sorted(data['declined_by']))
        self.assertEqual([], self.client.list_requests())
        self.assertEqual(0, self.creates())

    def test_min_ready_spare_is_reused(self):
        self.start_zk(min_ready=1)
        wait_for(lambda: self.client.list_nodes(states=['ready']),
                 message='no spare')
        [spare] = self.client.list_nodes(states=['ready'])
        zuul = self.zuul()
        request_id, data = self.fulfilled(zuul, ['small'])
        [node] = zuul.call('accept', id=request_id)
        self.assertEqual(spare['id'], node['driver_data']['fleetflow-node'])
        self.assertEqual('in-use', self.store_node(node)['state'])
        zuul.call('give_back', nodes=[node['id']])
        self.wait_gone(zuul, [node['id']])
        self.client.wait_node_gone(spare['id'], timeout=60)

    def node_in_use(self):
        """Zuul (nodepool's client) and a node it accepted and uses."""
        self.start_zk()
        zuul = self.zuul()
        request_id, _ = self.fulfilled(zuul, ['small'])
        [node] = zuul.call('accept', id=request_id)
        zuul.call('use', nodes=[node['id']])
        return zuul, node

    def test_hold_until_it_expires(self):
        zuul, node = self.node_in_use()
        zuul.call('give_back', nodes=[node['id']], state='hold',
                  expiration=10, comment='debug the failure')
        held = wait_for(lambda: self.store_node(node)['state'] == 'hold'
                        and self.store_node(node),
                        message='the node is not held in the store')
        self.assertEqual('debug the failure', held['hold_reason'])
        znode = zuul.call('node', id=node['id'])
        self.assertEqual('hold', znode['state'])
        self.assertAlmostEqual(znode['state_time'] + 10,
                               held['hold_expires'], places=3)
        self.wait_gone(zuul, [node['id']])
        self.client.wait_node_gone(held['id'], timeout=60)
        [row] = self.history(held['id'])
        self.assertIsNotNone(row['gone_at'])

    def test_locked_node_kept_then_deleted_when_the_lock_vanishes(self):
        zuul, node = self.node_in_use()
        # Several front end passes (0.1 s apart) and cleanups later, the
        # node Zuul holds is untouched.
        other = self.zuul()
        other_id, _ = self.fulfilled(other, ['small'])
        self.assertEqual('in-use', self.store_node(node)['state'])
        self.assertEqual('in-use', other.call('node', id=node['id'])['state'])
        zuul.call('drop')
        self.wait_gone(other, [node['id']])
        self.client.wait_node_gone(node['driver_data']['fleetflow-node'],
                                   timeout=60)

    def test_sigkilled_launcher_restarted_mid_request(self):
        # nodepool's cleanup interval: the new launcher takes the request
        # up once the old session's lock is gone, not at the next cleanup.
        self.start_zk(create_latency=3, conf={'cleanup_interval': 30})
        zuul = self.zuul()
        request_id = zuul.call('request', labels=['small', 'large'])
        wait_for(lambda: len(self.cloud.instance_history()) == 2,
                 message='the launches did not start')
        self.assertEqual('pending',
                         zuul.call('request_data', id=request_id)['state'])
        self.launcher.proc.kill()
        self.launcher.proc.wait()
        self.start_launcher('launcher-2')
        data = zuul.call('wait', id=request_id, timeout=60)
        self.assertEqual('fulfilled', data['state'])
        self.assertEqual(2, len(data['nodes']))
        nodes = [zuul.call('node', id=i) for i in data['nodes']]
        self.assertEqual(2, len([n for n in zuul.call('nodes')
                                 if n['allocated_to'] == request_id]))
        store_ids = [n['driver_data']['fleetflow-node'] for n in nodes]
        self.assertEqual(2, len(set(store_ids)))
        for node_id in store_ids:
            self.assertEqual(1, len(self.history(node_id)))
        self.assertEqual(2, len(self.history()))
        [row] = self.client.list_requests()
        self.assertEqual((request_id, 'fulfilled'),
                         (row['zk_request'], row['state']))
        zuul.call('accept', id=request_id)
        zuul.call('give_back', nodes=data['nodes'])
        self.wait_gone(zuul, data['nodes'])
        wait_for(lambda: not self.alive(), message='instances left')

    def test_restarted_launcher_leaves_the_nodes_zuul_holds(self):
        zuul, node = self.node_in_use()
        self.launcher.proc.kill()
        self.launcher.proc.wait()
        self.start_launcher('launcher-2')
        # The new launcher's passes and cleanups (every 0.5 s) run while a
        # second request is served.
        self.fulfilled(zuul, ['large'])
        self.assertEqual('in-use', self.store_node(node)['state'])
        self.assertEqual('in-use', zuul.call('node', id=node['id'])['state'])
        self.assertEqual(1, len(self.alive(self.cloud).get(
            node['driver_data']['fleetflow-node'], [])))
        zuul.call('give_back', nodes=[node['id']])
        self.wait_gone(zuul, [node['id']])

    def mark_pending(self, request_id):
        """Leave a NodeRequest pending, as a launcher that died does.

        :returns: the NodeRequest's path.
        """
        path = '%s/nodepool/requests/%s' % (self.chroot, request_id)
        raw, _ = self.admin.get(path)
        self.admin.set(path, json.dumps(dict(
            json.loads(raw), state='pending')).encode())
        return path

    def test_request_fulfilled_in_the_store_only_then_gone(self):
        # A launcher took the NodeRequest and died; its session still
        # holds the lock while the next launcher fulfils the store
        # request, so no Node znode is written; then Zuul's session ends,
        # and its (ephemeral) NodeRequest with it.
        self.start_zk(launch=False)
        zuul = self.zuul()
        request_id = zuul.call('request', labels=['small'])
        path = self.mark_pending(request_id)
        lock = connection.try_lock(self.admin, '%s/nodepool/requests-lock/%s'
                                   % (self.chroot, request_id))
        self.assertIsNotNone(lock)
        row = self.client.store.create_request(['small'],
                                               zk_request=request_id)
        self.start_launcher()
        self.client.wait_for_request(row['id'], timeout=60)
        [node] = self.client.request_nodes(row['id'])
        self.assertEqual(('in-use', None), (node['state'], node['zk_node']))
        zuul.call('drop')
        wait_for(lambda: not self.admin.exists(path),
                 message='the NodeRequest outlived its session')
        connection.release(lock)
        # Zuul never got the node: it is deleted, the request forgotten.
        self.client.wait_node_gone(node['id'], timeout=60)
        wait_for(lambda: not self.client.list_requests(),
                 message='the store request is still there')
        self.assertEqual({}, self.alive())

    def test_in_use_node_whose_znode_is_gone_is_deleted(self):
        zuul, node = self.node_in_use()
        self.assertEqual('in-use', self.store_node(node)['state'])
        self.admin.delete('%s/nodepool/nodes/%s' % (self.chroot, node['id']),
                          recursive=True)
        self.client.wait_node_gone(node['driver_data']['fleetflow-node'],
                                   timeout=60)
        self.assertEqual({}, self.alive())

    def test_zookeeper_and_api_requests_share_a_pool_quota(self):
        self.start_zk(max_servers=2)
        api_request = self.client.create_request(['small', 'small'])
        self.client.wait_for_request(api_request['id'], timeout=60)
        zuul = self.zuul()
        request_id = zuul.call('request', labels=['small'])
        self.assertIsNone(zuul.call('wait', id=request_id, timeout=2)
                          .get('nodes') or None)
        self.assertNotEqual('fulfilled',
                            zuul.call('request_data',
                                      id=request_id)['state'])
        self.assertEqual(2, len(self.history()))
        self.client.release_request(api_request['id'])
        data = zuul.call('wait', id=request_id, timeout=60)
        self.assertEqual('fulfilled', data['state'])
        wait_for(lambda: len(self.alive()) == 1,
                 message='the API nodes were not deleted')

    def test_pools_follow_a_reloaded_layout(self):
        self.start_zk()
        zuul = self.zuul()
        [pool] = self.registered_pools(zuul)
        self.assertEqual(['large', 'small'], pool['supported_labels'])
        data = self.zookeeper_layout(test_launcher.layout())
        data['labels'].append({'name': 'medium'})
        data['providers'][0]['pools'][0]['labels'].append(
            {'name': 'medium'})
        self.env.write_layout(data)
        self.launcher.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: [p['supported_labels'] for p in zuul.call('pools')]
                 == [['large', 'medium', 'small']],
                 message='the pool did not follow the layout')
        self.assertEqual(pool['id'], zuul.call('pools')[0]['id'])
        self.fulfilled(zuul, ['medium'])

    def test_pending_request_of_a_dead_launcher_is_served_again(self):
        self.start_zk(launch=False, conf={'stale_lock_age': 1})
        zuul = self.zuul()
        request_id = zuul.call('request', labels=['small'])
        # A launcher that died left it pending, and the lock of a request
        # that is gone.
        self.mark_pending(request_id)
        stale = '%s/nodepool/requests-lock/100-0000009999' % self.chroot
        self.admin.create(stale + '/0123456789abcdef__lock__0000000000',
                          makepath=True)
        self.start_launcher()
        data = zuul.call('wait', id=request_id, timeout=60)
        self.assertEqual('fulfilled', data['state'])
        wait_for(lambda: not self.admin.exists(stale),
                 message='the stale request lock is still there')
        self.assertTrue(self.admin.exists(
            '%s/nodepool/requests-lock/%s' % (self.chroot, request_id)))


class TestZooKeeperZuul(ZooKeeperTestCase):
    """Zuul's own client, zuul.zk.nodepool.ZooKeeperNodepool."""

    CLIENT = 'zuul'

    def test_two_nodes_used_and_deleted(self):
        self.start_zk()
        zuul = self.zuul()
        request_id, data = self.fulfilled(zuul, ['small', 'large'],
                                          priority='200')
        nodes = zuul.call('accept', id=request_id)
        self.assertEqual([['small'], ['large']], [n['type'] for n in nodes])
        self.assertEqual({'ready'}, {n['state'] for n in nodes})
        self.assertEqual({request_id}, {n['allocated_to'] for n in nodes})
        ids = [node['id'] for node in nodes]
        zuul.call('use', nodes=ids)
        store_ids = [node['driver_data']['fleetflow-node'] for node in nodes]
        self.assertEqual(['in-use', 'in-use'],
                         [self.client.get_node(i)['state']
                          for i in store_ids])
        zuul.call('give_back', nodes=ids)
        self.wait_gone(zuul, ids)
        for node_id in store_ids:
            self.client.wait_node_gone(node_id, timeout=60)
        wait_for(lambda: not self.alive(), message='instances left')

    def test_unknown_label_fails(self):
        self.start_zk()
        zuul = self.zuul()
        request_id = zuul.call('request', labels=['no-such-label'])
        data = zuul.call('wait', id=request_id, timeout=60)
        self.assertEqual('failed', data['state'])
        self.assertEqual(sorted(p['id'] for p in zuul.call('pools')),
                         sorted(data['declined_by']))


class TestZooKeeperTLS(ZooKeeperTestCase):

    def test_server_certificate_checked_against_the_ca(self):
        client = connection.connect(self.settings())
        self.addCleanup(client.close)
        self.addCleanup(client.stop)
        self.assertTrue(self.admin.exists(self.chroot + '/nodepool/nodes'))
        other = self.useFixture(fixtures.TempDir()).path
        subprocess.run([os.path.join(ROOT, 'tools', 'test-tls'), other],
                       check=True, stdout=subprocess.DEVNULL)
        settings = self.settings(ca=os.path.join(other, 'ca.pem'))
        settings['timeout'] = 3.0
        error = self.assertRaises(exceptions.ConfigError,
                                  connection.connect, settings)
        self.assertIn('is the server certificate signed by the CA', str(error))
