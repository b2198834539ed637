"""The launcher's pass and flow callbacks, without its process."""

from fleetflow.db import models
from fleetflow import launcher as ff_launcher
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
