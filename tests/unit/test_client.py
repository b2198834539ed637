"""The Python client API, against a migrated SQLite database.

The launcher's part (serving a request, deleting a node) is simulated by
writing to the store from a thread, as a launcher in another process would.
"""

import threading
import time

import fixtures
from oslo_config import cfg

from fleetflow import client as ff_client
from fleetflow import conf as ff_conf
from fleetflow.db import models
from fleetflow import exceptions
from fleetflow import node_states
from tests import base


class ClientTestCase(base.TestCase):

    def setUp(self):
        super().setUp()
        self.ff = self.useFixture(base.FleetflowFixture(start=False,
                                                        runner=False))
        self.store = self.ff.store
        self.client = ff_client.Client(self.ff.conf, poll_interval=0.05)
        self.addCleanup(self.client.close)

    def later(self, delay, function, *args, **kwargs):
        """Call ``function`` from a thread after ``delay`` seconds."""
        timer = threading.Timer(delay, function, args, kwargs)
        timer.start()
        self.addCleanup(timer.join)
        self.addCleanup(timer.cancel)

    def ready_node(self, label=base.LABEL, **fields):
        node = self.ff.create_node(label=label, **fields)
        self.store.set_node_state(
            node['id'], node_states.READY, interface_ip='192.0.2.10',
            username='zuul', connection_port=2222,
            host_keys=['ssh-ed25519 AAAAC3Nz'])
        return self.store.get_node(node['id'])

    def fulfil(self, request_id, labels):
        """What a launcher does to fulfil a request."""
        self.store.set_request_state(request_id, models.PENDING,
                                     expected=[models.REQUESTED])
        for label in labels:
            node = self.ready_node(label=label, request_id=request_id)
            self.store.set_node_state(node['id'], node_states.IN_USE,
                                      expected=[node_states.READY])
        self.store.set_request_state(request_id, models.FULFILLED,
                                     expected=[models.PENDING])


class TestClientConstruction(ClientTestCase):

    def test_embedding_service_conf(self):
        # A service registers fleetflow's options on its own ConfigOpts
        # and sets them; it does not have to parse any argument.
        conf = cfg.ConfigOpts()
        ff_conf.register_opts(conf)
        conf.set_override('state_path', self.ff.state_path)
        with ff_client.Client(conf) as client:
            request = client.create_request([base.LABEL])
        self.assertEqual(models.REQUESTED,
                         self.store.get_request(request['id'])['state'])

    def test_from_context(self):
        client = ff_client.Client.from_context(self.ff.ctx)
        self.assertIs(self.ff.ctx.store, client.store)
        client.close()  # leaves the context's engine alone
        self.assertEqual([], client.list_nodes())


class TestRequests(ClientTestCase):

    def test_create_request(self):
        request = self.client.create_request(['small', 'small'],
                                             priority=50, requestor='ci')
        self.assertEqual(models.REQUESTED, request['state'])
        self.assertEqual(['small', 'small'], request['labels'])
        self.assertEqual(50, request['priority'])
        self.assertEqual('ci', request['requestor'])
        self.assertEqual([], request['nodes'])
        self.assertIsNone(request['reason'])
        got = self.client.get_request(request['id'])
        self.assertEqual(request, got)

    def test_default_priority(self):
        self.assertEqual(100, self.client.create_request(['x'])['priority'])

    def test_empty_labels_refused(self):
        for labels in ([], (), None):
            e = self.assertRaises(ff_client.InvalidRequest,
                                  self.client.create_request, labels)
            self.assertIn('at least one label', str(e))
        self.assertEqual([], self.client.list_requests())

    def test_string_labels_refused(self):
        e = self.assertRaises(ff_client.InvalidRequest,
                              self.client.create_request, 'small')
        self.assertIn('list of label names', str(e))

    def test_blank_label_refused(self):
        self.assertRaises(ff_client.InvalidRequest,
                          self.client.create_request, ['small', ' '])

    def test_priority_must_be_int(self):
        self.assertRaises(ff_client.InvalidRequest,
                          self.client.create_request, ['small'], 'high')
        self.assertRaises(ff_client.InvalidRequest,
                          self.client.create_request, ['small'], True)

    def test_priority_range(self):
        for priority in (0, 1000000):
            self.client.create_request(['small'], priority)
        for priority in (-1, 1000001, 2 ** 63):
            e = self.assertRaises(ff_client.InvalidRequest,
                                  self.client.create_request, ['small'],
                                  priority)
            self.assertIn('from 0 to 1000000, not %d' % priority, str(e))
        self.assertEqual(2, len(self.client.list_requests()))

    def test_nodes_per_request_bounded(self):
        self.client.create_request(['small'] * 50)
        e = self.assertRaises(ff_client.InvalidRequest,
                              self.client.create_request, ['small'] * 3000)
        self.assertEqual('a request may ask for at most 50 nodes ([requests] '
                         'max_nodes), not 3000', str(e))
        self.assertEqual(1, len(self.client.list_requests()))

    def test_unknown_label_is_recorded(self):
        # The client has no layout; the launcher declines the request.
        request = self.client.create_request(['no-such-label'])
        self.assertEqual(['no-such-label'],
                         self.client.get_request(request['id'])['labels'])

    def test_get_unknown_request(self):
        e = self.assertRaises(ff_client.NotFound, self.client.get_request,
                              'nope')
        self.assertEqual('request nope not found', str(e))

    def test_list_requests_lower_priority_first(self):
        low = self.client.create_request(['small'], priority=200)
        old = self.client.create_request(['small'])
        high = self.client.create_request(['small'], priority=10)
        new = self.client.create_request(['small'])
        self.assertEqual([high['id'], old['id'], new['id'], low['id']],
                         [r['id'] for r in self.client.list_requests()])

    def test_list_requests_by_state_with_nodes(self):
        done = self.client.create_request(['small'])
        waiting = self.client.create_request(['small'])
        self.fulfil(done['id'], ['small'])
        listed = self.client.list_requests(states=[models.FULFILLED])
        self.assertEqual([done['id']], [r['id'] for r in listed])
        self.assertEqual(1, len(listed[0]['nodes']))
        self.assertEqual(
            [waiting['id']],
            [r['id'] for r in self.client.list_requests(
                states=[models.REQUESTED])])

    def test_wait_for_request_fulfilled(self):
        request = self.client.create_request(['small', 'small'])
        self.later(0.3, self.fulfil, request['id'], ['small', 'small'])
        start = time.monotonic()
        got = self.client.wait_for_request(request['id'], timeout=10)
        self.assertLess(time.monotonic() - start, 5)
        self.assertEqual(models.FULFILLED, got['state'])
        self.assertEqual(2, len(got['nodes']))
        nodes = self.client.request_nodes(request['id'])
        self.assertEqual(sorted(got['nodes']),
                         sorted(n['id'] for n in nodes))
        for node in nodes:
            self.assertEqual(node_states.IN_USE, node['state'])
            self.assertEqual('192.0.2.10', node['interface_ip'])
            self.assertEqual(2222, node['connection_port'])
            self.assertEqual('zuul', node['username'])
            self.assertEqual('ssh', node['connection_type'])
            self.assertEqual(['ssh-ed25519 AAAAC3Nz'], node['host_keys'])

    def test_wait_for_request_failed(self):
        request = self.client.create_request(['no-such-label'])
        self.later(0.2, self.store.set_request_state, request['id'],
                   models.REQUEST_FAILED,
                   reason='unknown label(s): no-such-label')
        got = self.client.wait_for_request(request['id'], timeout=10)
        self.assertEqual(models.REQUEST_FAILED, got['state'])
        self.assertEqual('unknown label(s): no-such-label', got['reason'])

    def test_wait_for_request_timeout(self):
        request = self.client.create_request(['small'])
        self.store.set_request_state(request['id'], models.PENDING)
        start = time.monotonic()
        e = self.assertRaises(ff_client.WaitTimeout,
                              self.client.wait_for_request, request['id'],
                              timeout=0.5)
        elapsed = time.monotonic() - start
        self.assertGreaterEqual(elapsed, 0.5)
        self.assertLess(elapsed, 2)
        self.assertIsInstance(e, TimeoutError)
        self.assertIn('still pending after 0.5s', str(e))
        self.assertEqual(models.PENDING, e.last['state'])

    def test_wait_for_request_zero_timeout_looks_once(self):
        request = self.client.create_request(['small'])
        self.fulfil(request['id'], ['small'])
        got = self.client.wait_for_request(request['id'], timeout=0)
        self.assertEqual(models.FULFILLED, got['state'])

    def test_wait_for_released_request(self):
        request = self.client.create_request(['small'])
        self.later(0.2, self.store.release_request, request['id'])
        self.assertRaises(ff_client.NotFound, self.client.wait_for_request,
                          request['id'], timeout=10)

    def test_wait_polls_with_tenacity(self):
        # The wait sleeps through tenacity, backing off to poll_interval.
        sleeps = []
        real_sleep = time.sleep

        def sleep(seconds):
            sleeps.append(seconds)
            real_sleep(seconds)

        self.useFixture(fixtures.MonkeyPatch('tenacity.nap.time.sleep',
                                             sleep))
        request = self.client.create_request(['small'])
        self.assertRaises(ff_client.WaitTimeout,
                          self.client.wait_for_request, request['id'],
                          timeout=0.3)
        self.assertTrue(sleeps)
        self.assertLessEqual(max(sleeps), self.client.poll_interval)

    def test_release_request(self):
        request = self.client.create_request(['small', 'small'])
        self.fulfil(request['id'], ['small', 'small'])
        node_ids = self.client.get_request(request['id'])['nodes']
        held = self.client.hold_node(node_ids[0], reason='debug')
        self.client.release_request(request['id'])
        self.assertRaises(ff_client.NotFound, self.client.get_request,
                          request['id'])
        self.assertEqual(node_states.HOLD,
                         self.client.get_node(held['id'])['state'])
        self.assertEqual(node_states.USED,
                         self.client.get_node(node_ids[1])['state'])

    def test_release_unknown_request(self):
        self.assertRaises(ff_client.NotFound, self.client.release_request,
                          'nope')

    def test_request_nodes_of_unknown_request(self):
        self.assertRaises(ff_client.NotFound, self.client.request_nodes,
                          'nope')


class TestNodes(ClientTestCase):

    def test_get_node(self):
        node = self.ready_node()
        got = self.client.get_node(node['id'])
        self.assertEqual(node, got)
        e = self.assertRaises(ff_client.NotFound, self.client.get_node,
                              'nope')
        self.assertEqual('node nope not found', str(e))

    def test_list_nodes_filters(self):
        ready = self.ready_node()
        building = self.ff.create_node(label='other')
        self.assertEqual([ready['id'], building['id']],
                         [n['id'] for n in self.client.list_nodes()])
        self.assertEqual([ready['id']], [n['id'] for n in
                                         self.client.list_nodes(
                                             states='ready')])
        self.assertEqual([building['id']], [
            n['id'] for n in self.client.list_nodes(
                states=[node_states.BUILDING], provider=base.PROVIDER,
                label='other', pool=base.POOL)])
        self.assertEqual([], self.client.list_nodes(provider='elsewhere'))

    def test_delete_ready_node(self):
        node = self.ready_node()
        deleted = self.client.delete_node(node['id'])
        self.assertEqual(node_states.USED, deleted['state'])
        self.assertEqual(node_states.USED,
                         self.store.get_node(node['id'])['state'])

    def test_delete_in_use_node(self):
        node = self.ready_node()
        self.store.set_node_state(node['id'], node_states.IN_USE)
        self.assertEqual(node_states.USED,
                         self.client.delete_node(node['id'])['state'])

    def test_delete_node_on_its_way_out_is_left_alone(self):
        for state in (node_states.USED, node_states.DELETING,
                      node_states.FAILED, node_states.ABORTED):
            node = self.ff.create_node(state=state)
            self.assertEqual(state,
                             self.client.delete_node(node['id'])['state'])

    def test_delete_held_node_refused(self):
        node = self.ready_node()
        self.client.hold_node(node['id'], reason='debugging a failure')
        e = self.assertRaises(exceptions.NodeStateConflict,
                              self.client.delete_node, node['id'])
        self.assertIn('held (debugging a failure); release it first',
                      str(e))
        self.assertEqual(node_states.HOLD,
                         self.store.get_node(node['id'])['state'])

    def test_delete_building_node_refused(self):
        node = self.ff.create_node()
        e = self.assertRaises(exceptions.NodeStateConflict,
                              self.client.delete_node, node['id'])
        self.assertIn('is building', str(e))

    def test_delete_unknown_node(self):
        self.assertRaises(ff_client.NotFound, self.client.delete_node,
                          'nope')

    def test_hold_node(self):
        node = self.ready_node()
        before = time.time()
        held = self.client.hold_node(node['id'], reason='look at logs',
                                     expires_seconds=3600)
        self.assertEqual(node_states.HOLD, held['state'])
        self.assertEqual('look at logs', held['hold_reason'])
        self.assertGreaterEqual(held['hold_expires'], before + 3600)
        self.assertLess(held['hold_expires'], time.time() + 3600 + 1)

    def test_hold_again_replaces_reason_and_expiry(self):
        node = self.ready_node()
        self.client.hold_node(node['id'], reason='a', expires_seconds=60)
        held = self.client.hold_node(node['id'], reason='b')
        self.assertEqual('b', held['hold_reason'])
        self.assertIsNone(held['hold_expires'])

    def test_hold_used_node(self):
        node = self.ff.create_node(state=node_states.USED)
        self.assertEqual(node_states.HOLD,
                         self.client.hold_node(node['id'])['state'])

    def test_hold_refused_while_deleting(self):
        node = self.ff.create_node(state=node_states.DELETING)
        e = self.assertRaises(exceptions.NodeStateConflict,
                              self.client.hold_node, node['id'])
        self.assertIn('is deleting', str(e))

    def test_hold_expiry_must_be_positive(self):
        node = self.ready_node()
        self.assertRaises(ff_client.InvalidRequest, self.client.hold_node,
                          node['id'], expires_seconds=0)

    def test_release_node(self):
        node = self.ready_node()
        self.client.hold_node(node['id'], expires_seconds=60)
        released = self.client.release_node(node['id'])
        self.assertEqual(node_states.USED, released['state'])
        self.assertIsNone(released['hold_expires'])

    def test_release_node_not_held(self):
        node = self.ready_node()
        e = self.assertRaises(exceptions.NodeStateConflict,
                              self.client.release_node, node['id'])
        self.assertIn('is not held (it is ready)', str(e))

    def test_state_change_race_is_reported(self):
        node = self.ready_node()
        real = self.client.store.set_node_state

        def racing(node_id, state, expected=None, **fields):
            real(node_id, node_states.HOLD)  # Zuul held it first
            return real(node_id, state, expected=expected, **fields)

        self.useFixture(fixtures.MockPatchObject(
            self.client.store, 'set_node_state', side_effect=racing))
        e = self.assertRaises(exceptions.NodeStateConflict,
                              self.client.delete_node, node['id'])
        self.assertIn('changed to hold meanwhile', str(e))

    def test_wait_node_gone(self):
        node = self.ready_node()
        self.client.delete_node(node['id'])
        self.later(0.3, self.store.delete_node, node['id'])
        self.assertIsNone(self.client.wait_node_gone(node['id'],
                                                     timeout=10))

    def test_wait_node_gone_timeout(self):
        node = self.ready_node()
        self.client.delete_node(node['id'])
        start = time.monotonic()
        e = self.assertRaises(ff_client.WaitTimeout,
                              self.client.wait_node_gone, node['id'],
                              timeout=0.4)
        self.assertLess(time.monotonic() - start, 2)
        self.assertIn('still used after 0.4s', str(e))
        self.assertEqual(node['id'], e.last['id'])

    def test_wait_for_unknown_node_is_immediate(self):
        self.assertIsNone(self.client.wait_node_gone('nope', timeout=0))
