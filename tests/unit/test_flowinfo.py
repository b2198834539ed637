"""What describe_flows tells about a node's flows, and what it costs."""

from unittest import mock

from taskflow import states

from fleetflow import flowinfo
from fleetflow import node_states
from tests import base

LAUNCH_ATOMS = ['mark-building', 'launch-attempts', 'wait-last-gone-deadline',
                'wait-last-instance-gone', 'create-instance',
                'wait-active-deadline', 'wait-instance-active',
                'update-node', 'mark-ready']


class FlowinfoTestCase(base.TestCase):

    persistence = 'sql'

    def fleet(self, **kwargs):
        kwargs.setdefault('persistence', self.persistence)
        return self.useFixture(base.FleetflowFixture(**kwargs))

    def atoms(self, flow):
        return {a['name']: a for a in flow['atoms']}


class TestDescribeFlows(FlowinfoTestCase):

    def test_clean_launch(self):
        ff = self.fleet(create_latency=0.3)
        node, run = ff.launch()
        [flow] = flowinfo.describe_flows(ff.ctx, node['id'])
        self.assertEqual('launch-%s' % node['id'], flow['name'])
        self.assertEqual(run.flow_id, flow['uuid'])
        self.assertEqual(states.SUCCESS, flow['state'])
        self.assertEqual(LAUNCH_ATOMS, [a['name'] for a in flow['atoms']])
        atoms = self.atoms(flow)
        for atom in flow['atoms']:
            self.assertEqual(states.SUCCESS, atom['state'], atom)
            self.assertEqual(states.EXECUTE, atom['intention'])
            self.assertIsNone(atom['failure'])
            self.assertIsNotNone(atom['duration'], atom)
            self.assertGreaterEqual(atom['duration'], 0)
            self.assertLessEqual(atom['started'], atom['ended'])
            self.assertEqual('retry' if atom['name'].endswith(
                ('-attempts', '-deadline')) else 'task', atom['kind'])
        self.assertEqual(1, atoms['launch-attempts']['attempts'])
        self.assertEqual([{'value': 1, 'failures': {}}],
                         atoms['launch-attempts']['history'])
        self.assertEqual(1, atoms['create-instance']['attempts'])
        self.assertEqual('launch-attempt', atoms['create-instance']['flow'])
        self.assertEqual('wait-active',
                         atoms['wait-instance-active']['flow'])
        self.assertEqual('launch', atoms['mark-ready']['flow'])
        # The poll waited for the instance to build: its duration covers
        # the wait, most of which held no worker.
        wait = atoms['wait-instance-active']
        self.assertGreaterEqual(wait['duration'], 0.2)
        self.assertLessEqual(wait['busy'], wait['duration'] + 0.01)
        self.assertGreaterEqual(flow['duration'], wait['duration'])

    def test_failed_attempt_then_success(self):
        ff = self.fleet(create_latency=0.05)
        ff.script_faults('instance-error', [True])
        node, _run = ff.launch()
        [flow] = flowinfo.describe_flows(ff.ctx, node['id'])
        atoms = self.atoms(flow)
        attempts = atoms['launch-attempts']
        self.assertEqual(2, attempts['attempts'])
        [first, second] = attempts['history']
        self.assertEqual(1, first['value'])
        # The failure reverted the inner poll's scope, then this one.
        [failure] = first['failures'].values()
        self.assertIn('went to ERROR', failure)
        self.assertEqual({}, second['failures'])
        self.assertEqual(2, atoms['create-instance']['attempts'])
        self.assertIsNone(atoms['create-instance']['failure'])

    def test_reverted_launch(self):
        ff = self.fleet(launch_retries=2, faults={'create-error': 1})
        node, _run = ff.launch()
        [flow] = flowinfo.describe_flows(ff.ctx, node['id'])
        self.assertEqual(states.REVERTED, flow['state'])
        atoms = self.atoms(flow)
        attempts = atoms['launch-attempts']
        self.assertEqual(states.REVERTED, attempts['state'])
        # TaskFlow empties a reverted retry's history; the count stays.
        self.assertEqual([], attempts['history'])
        self.assertEqual(2, attempts['attempts'])
        self.assertIn('simulated create error', attempts['failure'])
        create = atoms['create-instance']
        self.assertEqual(states.REVERTED, create['state'])
        self.assertEqual(states.REVERT, create['intention'])
        self.assertIn('simulated create error', create['failure'])
        self.assertEqual(2, create['attempts'])
        building = atoms['mark-building']
        self.assertEqual(states.REVERTED, building['state'])
        self.assertIn('simulated create error', building['failure'])
        self.assertEqual(0, atoms['update-node']['attempts'])
        self.assertIsNone(atoms['update-node']['duration'])

    def test_launch_and_failed_delete(self):
        ff = self.fleet()
        node, _run = ff.launch()
        ff.script_faults('delete-error', [True])
        ff.delete(node)
        launch, delete = flowinfo.describe_flows(ff.ctx, node['id'])
        self.assertEqual(states.SUCCESS, launch['state'])
        self.assertEqual('delete-%s' % node['id'], delete['name'])
        self.assertEqual(states.REVERTED, delete['state'])
        atoms = self.atoms(delete)
        self.assertEqual(states.REVERTED, atoms['delete-instance']['state'])
        self.assertIn('simulated delete error',
                      atoms['delete-instance']['failure'])
        self.assertEqual(states.REVERTED, atoms['mark-deleting']['state'])

    def test_deleted_node_has_no_flows(self):
        ff = self.fleet()
        node, _run = ff.launch()
        ff.delete(node)
        self.assertIsNone(ff.node(node['id']))
        self.assertEqual([], flowinfo.describe_flows(ff.ctx, node['id']))
        self.assertEqual([], flowinfo.describe_flows(ff.ctx, 'no-such'))


class TestDescribeFlowsInMemory(TestDescribeFlows):

    persistence = 'memory'


class TestTimingCost(FlowinfoTestCase):

    def test_timing_costs_no_transaction(self):
        """Noting an atom's times commits nothing: the next save has them.

        Measured around each note rather than by comparing whole runs,
        whose transactions vary with how often a flow is parked.
        """
        ff = self.fleet()
        store = ff.ctx.store
        note = flowinfo.AtomTimes._note
        committed = []

        def counted(listener, *args, **kwargs):
            before = store.transactions
            note(listener, *args, **kwargs)
            committed.append(store.transactions - before)

        with mock.patch.object(flowinfo.AtomTimes, '_note', counted):
            for _ in range(3):
                node, _run = ff.launch()
                self.assertEqual(node_states.READY, node['state'])
                ff.delete(node)
        self.assertGreater(len(committed), 3 * 10)
        self.assertEqual({0}, set(committed))
        node, _run = ff.launch()
        [launch] = flowinfo.describe_flows(ff.ctx, node['id'])
        # ... and the notes were saved with the flow's own saves.
        done = [atom for atom in launch['atoms']
                if atom['state'] == states.SUCCESS]
        self.assertGreater(len(done), 3)
        self.assertNotIn(None, [atom['duration'] for atom in done])
