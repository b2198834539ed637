"""The table of node states: its shape, the store's check, the flows."""

import threading

import fixtures
from taskflow import states

from fleetflow import client as ff_client
from fleetflow.db import models
from fleetflow import exceptions
from fleetflow import node_states
from tests import base


class TestTable(base.TestCase):

    def test_every_state_has_its_moves_and_moves_to_states(self):
        self.assertEqual(set(node_states.ALL), set(node_states.TRANSITIONS))
        for targets in node_states.TRANSITIONS.values():
            self.assertLessEqual(targets, set(node_states.ALL))

    def test_named_sets_are_states(self):
        for name in ('TO_DELETE', 'DELETE_FLOW', 'LAUNCH_FLOW', 'DOOMED',
                     'RETIRABLE', 'RELEASABLE', 'HOLDABLE', 'PAST_READY',
                     'SPARE', 'SERVING'):
            self.assertLessEqual(getattr(node_states, name),
                                 set(node_states.ALL), name)

    def test_check_names_the_refused_moves(self):
        node_states.check([node_states.READY, node_states.IN_USE],
                          node_states.USED)
        e = self.assertRaises(
            node_states.IllegalTransition, node_states.check,
            [node_states.READY, node_states.DELETING], node_states.BUILDING)
        self.assertEqual('a node may not move from deleting, ready to '
                         'building (allowed from: building)', str(e))
        e = self.assertRaises(node_states.IllegalTransition,
                              node_states.check, [], 'lost')
        self.assertEqual("'lost' is not a node state", str(e))


class TestStoreRefuses(base.TestCase):

    def setUp(self):
        super().setUp()
        self.ff = self.useFixture(base.FleetflowFixture(runner=False))
        self.store = self.ff.store

    def test_move_not_in_the_table_changes_nothing(self):
        node = self.ff.create_node(state=node_states.READY)
        e = self.assertRaises(
            node_states.IllegalTransition, self.store.set_node_state,
            node['id'], node_states.BUILDING, expected=[node_states.READY])
        self.assertIn('from ready to building', str(e))
        self.assertEqual(node_states.READY,
                         self.store.get_node(node['id'])['state'])

    def test_state_changed_as_a_field_is_checked_too(self):
        node = self.ff.create_node(state=node_states.DELETING)
        self.assertRaises(node_states.IllegalTransition,
                          self.store.update_node, node['id'],
                          expected=[node_states.DELETING],
                          state=node_states.READY)
        self.assertEqual(node_states.DELETING,
                         self.store.get_node(node['id'])['state'])

    def test_without_expected_only_from_the_allowed_states(self):
        ready = self.ff.create_node(state=node_states.READY)
        self.store.set_node_state(ready['id'], node_states.USED)
        self.assertEqual(node_states.USED,
                         self.store.get_node(ready['id'])['state'])
        failed = self.ff.create_node(state=node_states.FAILED)
        self.assertRaises(exceptions.NodeStateConflict,
                          self.store.set_node_state,
                          failed['id'], node_states.USED)
        self.assertEqual(node_states.FAILED,
                         self.store.get_node(failed['id'])['state'])


class TestFlowsFollowTheTable(base.TestCase):
    """The moves of real flows, store calls and the client, observed.

    Each is one the table allows, and the walk sees every move expected of
    it, so the check is not empty.
    """

    def setUp(self):
        super().setUp()
        self.ff = self.useFixture(base.FleetflowFixture(
            create_latency=0.05, delete_latency=0.05))
        self.store = self.ff.store
        self.seen = set()
        self._lock = threading.Lock()
        for name in ('_change', 'fulfil_request', 'release_request'):
            self._observe(name)

    def _observe(self, name):
        real = getattr(self.store, name)

        def observed(*args, **kwargs):
            if kwargs.get('tx') is not None:
                return real(*args, **kwargs)
            with self._lock:
                before = self._states()
                result = real(*args, **kwargs)
                after = self._states()
            self.seen.update((before[node_id], state)
                             for node_id, state in after.items()
                             if before.get(node_id, state) != state)
            return result

        self.useFixture(fixtures.MockPatchObject(self.store, name,
                                                 side_effect=observed))

    def _states(self):
        return {node['id']: node['state'] for node in
                self.store.list_nodes()}

    def test_launch_use_release_hold_delete_and_failed_launch(self):
        ff = self.ff
        # launched, handed to a request, released, deleted
        node, run = ff.launch()
        self.assertEqual(states.SUCCESS, run.state)
        request = self.store.create_request([base.LABEL])
        self.store.set_request_state(request['id'], models.PENDING)
        self.assertTrue(self.store.assign_node(node['id'], request['id']))
        self.assertTrue(self.store.fulfil_request(request['id'],
                                                  [node['id']]))
        self.store.release_request(request['id'])
        self.assertEqual(states.SUCCESS, ff.delete(ff.node(node['id'])).state)
        # held by a user, released, deleted
        client = ff_client.Client(ff.conf, store=self.store)
        node, _run = ff.launch()
        client.hold_node(node['id'], reason='debug')
        client.release_node(node['id'])
        self.assertEqual(states.SUCCESS, ff.delete(ff.node(node['id'])).state)
        # a launch whose every attempt fails, then deleted
        ff.script_faults('create-error', [True] * 3)
        node, run = ff.launch()
        self.assertEqual(node_states.FAILED, node['state'])
        self.assertEqual(states.SUCCESS, ff.delete(node).state)

        for move in self.seen:
            self.assertIn(move[1], node_states.TRANSITIONS[move[0]], move)
        self.assertEqual({
            (node_states.BUILDING, node_states.READY),
            (node_states.BUILDING, node_states.FAILED),
            (node_states.READY, node_states.IN_USE),
            (node_states.READY, node_states.HOLD),
            (node_states.IN_USE, node_states.USED),
            (node_states.HOLD, node_states.USED),
            (node_states.USED, node_states.DELETING),
            (node_states.FAILED, node_states.DELETING),
        }, self.seen)
