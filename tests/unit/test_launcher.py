"""The launcher's pass and flow callbacks, without its process."""

import time

from taskflow import states

from fleetflow.db import models
from fleetflow import flowinfo
from fleetflow import launcher as ff_launcher
from fleetflow import runner as ff_runner
from tests import base


class TestFulfilWhenReady(base.TestCase):

    def test_request_fulfilled_when_its_node_is_ready_not_at_a_pass(self):
        ff = self.useFixture(base.FleetflowFixture(create_latency=0.1,
                                                   runner=False))
        launcher = ff_launcher.Launcher(ff.ctx)
        self.addCleanup(launcher.runner.stop)
        request = ff.store.create_request(['small'])
        launcher.run_pass()
        [node] = ff.store.list_nodes(request_id=request['id'])
        self.assertEqual(models.PENDING,
                         ff.store.get_request(request['id'])['state'])
        # No pass runs from here on (the launcher's timer is not started):
        # the launch flow's end fulfils the request.
        ff.wait_for(lambda: ff.store.get_request(request['id'])['state']
                    == models.FULFILLED, timeout=20)
        self.assertEqual(1, launcher.passes)
        self.assertEqual(models.IN_USE, ff.node(node['id'])['state'])

    def test_a_flow_that_left_the_jobboard_wakes_the_pass(self):
        # The jobboard runner says a job left the board, not which.
        ff = self.useFixture(base.FleetflowFixture(runner=False))
        launcher = ff_launcher.Launcher(ff.ctx)
        self.addCleanup(launcher.runner.stop)
        launcher._wake.clear()
        launcher._flow_done(None)
        self.assertTrue(launcher._wake.is_set())


class TestFailingDeletes(base.TestCase):

    def test_deletes_of_a_node_back_off(self):
        ff = self.useFixture(base.FleetflowFixture(runner=False))
        launcher = ff_launcher.Launcher(ff.ctx)
        self.addCleanup(launcher.runner.stop)
        started = []
        launcher.runner.delete = started.append
        node = ff.create_node()
        ff.store.set_node_state(node['id'], models.DELETING)
        # [launcher] delete_retry_initial = 1, delete_retry_interval = 30.
        waits = []
        for _ in range(8):
            # The node was last marked deleting ``age`` seconds ago.
            for age in range(0, 40):
                ff.store.update_node(node['id'],
                                     state_time=time.time() - age - 0.01)
                launcher._handle_nodes(ff.store.list_nodes())
                if started:
                    waits.append(age)
                    started.clear()
                    break
        self.assertEqual([1, 2, 4, 8, 16, 30, 30, 30], waits)
        # A node that is gone is forgotten.
        ff.store.delete_node(node['id'])
        launcher._handle_nodes(ff.store.list_nodes())
        self.assertEqual({}, launcher._delete_tries)

    def test_logbook_stays_bounded_while_a_delete_keeps_failing(self):
        ff = self.useFixture(base.FleetflowFixture())
        node, run = ff.launch()
        ff.script_faults('delete-error', [True] * 9)
        for attempt in range(9):
            run = ff.delete(ff.node(node['id']))
            self.assertEqual(states.REVERTED, run.state)
            flows = flowinfo.describe_flows(ff.ctx, node['id'])
            self.assertEqual(min(attempt + 2, ff_runner.FLOWS_KEPT + 1),
                             len(flows))
        # The newest ones are kept: the last failures, not the launch.
        self.assertNotIn('launch-%s' % node['id'],
                         {flow['name'] for flow in flows})
        self.assertEqual(models.DELETING, ff.node(node['id'])['state'])
        self.assertEqual(states.SUCCESS,
                         ff.delete(ff.node(node['id'])).state)
        self.assertIsNone(ff.node(node['id']))
        self.assertEqual([], flowinfo.describe_flows(ff.ctx, node['id']))
        self.assertEqual([], [i for i in ff.instances()
                              if i.node_id == node['id']])
