"""What the ZooKeeper front end reads from znodes, writes, and decides."""

from unittest import mock

import testtools

from fleetflow.drivers import base as driver_base
from fleetflow import exceptions
from fleetflow.zk import connection
from fleetflow.zk import frontend
from fleetflow.zk import records


class TestRequests(testtools.TestCase):

    def test_a_good_request_has_no_problem(self):
        self.assertIsNone(records.request_problem(
            {'node_types': ['small', 'small'], 'declined_by': []}, 5))

    def test_bad_requests_are_named(self):
        for data, words in [
                ({}, 'non-empty list'),
                ({'node_types': 'small'}, 'non-empty list'),
                ({'node_types': []}, 'non-empty list'),
                ({'node_types': ['a'] * 6}, 'at most 5 nodes, not 6'),
                ({'node_types': ['a', 3]}, 'label names'),
                ({'node_types': ['a', '']}, 'label names'),
                ({'node_types': ['a'], 'declined_by': 'x'}, 'declined_by'),
                ({'node_types': ['a'],
                  'declined_by': ['x'] * (records.MAX_DECLINED + 1)},
                 'declined_by')]:
            self.assertIn(words, records.request_problem(data, 5), data)

    def test_declined_keeps_only_names(self):
        self.assertEqual({'a', 'b'}, records.declined(
            {'declined_by': ['a', 'b', 3, None]}))
        self.assertEqual(set(), records.declined({'declined_by': 'a'}))

    def test_nodepool_order(self):
        requests = [('200-0000000001', {}),
                    ('100-0000000003', {'relative_priority': 1}),
                    ('100-0000000004', {'relative_priority': 0}),
                    ('100-0000000002', {'relative_priority': 'junk'})]
        self.assertEqual(
            ['100-0000000002', '100-0000000004', '100-0000000003',
             '200-0000000001'],
            [request_id for request_id, data in sorted(
                requests, key=lambda item: records.sort_key(*item))])


class TestNodes(testtools.TestCase):

    NODE = {'id': '8a62b4b7-1d2c-4c64-9d59-0f1e7ad0a0b1', 'label': 'small',
            'provider': 'p', 'pool': 'main', 'region': 'r', 'az': 'z',
            'created_at': 1.0, 'external_id': 'i-1', 'interface_ip': '::1',
            'public_ipv4': None, 'private_ipv4': None, 'public_ipv6': '::1',
            'connection_type': 'ssh', 'connection_port': 2022,
            'username': None, 'host_keys': ['ssh-ed25519 AAAA']}

    def test_node_data_has_what_zuul_reads(self):
        data = records.node_data(
            self.NODE, '100-0000000001',
            {'requestor': 'zuul', 'tenant_name': 't'}, 'launcher-1',
            {'cloud': 'c'}, {'node-attributes': {'executor-zone': 'z1'}},
            {'username': 'zuul-worker', 'python-path': 'auto',
             'shell-type': None},
            driver_base.Quota(instances=1, cores=2, ram=1024).to_dict(), 5.0)
        self.assertEqual('ready', data['state'])
        self.assertEqual(['small'], data['type'])
        self.assertEqual('100-0000000001', data['allocated_to'])
        self.assertEqual((2022, 2022),
                         (data['connection_port'], data['ssh_port']))
        self.assertEqual('zuul-worker', data['username'])
        self.assertEqual(['ssh-ed25519 AAAA'], data['host_keys'])
        self.assertEqual({'executor-zone': 'z1'}, data['attributes'])
        self.assertEqual({'instances': 1, 'cores': 2, 'ram': 1024},
                         data['resources'])
        self.assertEqual(('c', 'r', 'z'),
                         (data['cloud'], data['region'], data['az']))
        self.assertEqual(('zuul', 't'),
                         (data['requestor'], data['tenant_name']))
        self.assertEqual(self.NODE['id'], records.fleetflow_node(data))

    def test_only_a_store_id_is_a_marker(self):
        for driver_data in (None, 'x', {}, {records.MARKER: 3},
                            {records.MARKER: '../../etc/passwd'}):
            self.assertIsNone(records.fleetflow_node(
                {'driver_data': driver_data}))

    def test_hold_expiry(self):
        held = {'state_time': 100, 'hold_expiration': 30}
        self.assertEqual(130, records.hold_expires(held, None))
        self.assertEqual(110, records.hold_expires(held, 10))
        self.assertEqual(110, records.hold_expires(
            {'state_time': 100}, 10))
        self.assertIsNone(records.hold_expires({'state_time': 100}, None))
        self.assertIsNone(records.hold_expires(
            {'state_time': 100, 'hold_expiration': 'junk'}, None))
        self.assertEqual(160, records.hold_expires(
            {'state_time': 100, 'hold_expiration': '60'}, None))


class TestConnection(testtools.TestCase):

    def test_hosts(self):
        self.assertEqual('zk1:2281,[::1]:2182/nodepool', connection.hosts(
            {'servers': [{'host': 'zk1', 'port': 2281,
                          'chroot': '/nodepool'},
                         {'host': '::1', 'port': 2182,
                          'chroot': '/nodepool'}]}))
        self.assertEqual('zk1:2281', connection.hosts(
            {'servers': [{'host': 'zk1', 'port': None, 'chroot': None}]}))

    def test_one_chroot(self):
        self.assertRaises(exceptions.ConfigError, connection.hosts, {
            'servers': [{'host': 'a', 'port': 1, 'chroot': '/x'},
                        {'host': 'b', 'port': 1, 'chroot': None}]})

    def test_decode_refuses_what_is_not_an_object(self):
        self.assertEqual({'a': 1}, connection.decode(b'{"a": 1}', '/p'))
        for raw in (b'[1]', b'\xff', b'nope'):
            self.assertRaises(connection.BadZnode, connection.decode, raw,
                              '/p')

    def test_read_takes_a_znode_without_data_for_gone(self):
        # what kazoo's lock recipe makes of a removed Node's path
        client = mock.Mock()
        client.get.return_value = (b'', mock.sentinel.stat)
        self.assertEqual((None, None), connection.read(client, '/p'))
        client.get.return_value = (b'{"a": 1}', mock.sentinel.stat)
        self.assertEqual(({'a': 1}, mock.sentinel.stat),
                         connection.read(client, '/p'))


class TestNodeAction(testtools.TestCase):
    """What the front end does with a Node nobody else holds."""

    REQUESTS = {'100-0000000001'}

    def action(self, state, row_state='in-use', zk_node='0000000007',
               allocated_to='100-0000000001', locked_here=False,
               row=True):
        data = {'state': state, 'allocated_to': allocated_to}
        row = {'id': 'n', 'state': row_state, 'zk_node': zk_node} \
            if row else None
        return frontend.node_action('0000000007', data, row, self.REQUESTS,
                                    locked_here)

    def test_used_or_abandoned_in_use_nodes_are_retired(self):
        self.assertEqual(frontend.RETIRE, self.action('used'))
        self.assertEqual(frontend.RETIRE, self.action('in-use'))

    def test_ready_node_of_a_request_that_is_gone_is_retired(self):
        self.assertIsNone(self.action('ready'))
        self.assertEqual(frontend.RETIRE, self.action(
            'ready', allocated_to='100-0000000002'))

    def test_hold(self):
        self.assertEqual(frontend.HOLD, self.action('hold'))
        self.assertIsNone(self.action('hold', row_state='hold'))
        # expired (or released) in the store
        self.assertEqual(frontend.RETIRE, self.action('hold',
                                                      row_state='used'))

    def test_deleting(self):
        self.assertEqual(frontend.RETIRE, self.action('deleting'))
        self.assertIsNone(self.action('deleting', row_state='deleting',
                                      locked_here=True))

    def test_node_gone_or_made_twice_removes_the_znode(self):
        self.assertEqual(frontend.REMOVE, self.action('in-use', row=False))
        self.assertEqual(frontend.REMOVE, self.action(
            'ready', zk_node='0000000003'))

    def test_unlinked_node_is_linked(self):
        self.assertEqual(frontend.LINK, self.action('ready', zk_node=None))
