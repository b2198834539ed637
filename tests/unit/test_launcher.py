"""The launcher's pass and flow callbacks, without its process."""

import time

from fleetflow.db import models
from fleetflow import launcher as ff_launcher
from fleetflow import quota as ff_quota
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


class TestLayoutKeys(base.TestCase):
    """nodepool's layout keys that change what a pass does."""

    def launcher(self, provider=None, pools=None, **layout):
        entry = base.fake_provider(quota={'instances': 10})
        entry.update(provider or {})
        for pool in pools or ():
            entry['pools'].append(pool)
        ff = self.useFixture(base.FleetflowFixture(
            layout={'labels': [{'name': 'small'}],
                    'providers': [entry], **layout},
            runner=False))
        launcher = ff_launcher.Launcher(ff.ctx)
        self.addCleanup(launcher.runner.stop)
        return ff, launcher

    def test_max_concurrency_bounds_the_requests_served_at_once(self):
        ff, launcher = self.launcher({'create-latency': 30,
                                      'max-concurrency': 2})
        requests = [ff.store.create_request(['small']) for _ in range(3)]
        launcher.run_pass()
        launcher.run_pass()
        self.assertEqual(
            [models.PENDING, models.PENDING, models.REQUESTED],
            [ff.store.get_request(r['id'])['state'] for r in requests])

    def test_priority_picks_the_pool(self):
        ff, launcher = self.launcher(
            {'create-latency': 30, 'priority': 50},
            pools=[{'name': 'first', 'priority': 10,
                    'labels': [{'name': 'small'}]}])
        request = ff.store.create_request(['small'])
        launcher.run_pass()
        self.assertEqual('first', ff.store.get_request(request['id'])['pool'])

    def test_max_hold_age_ends_a_hold(self):
        ff, launcher = self.launcher(**{'max-hold-age': 60})
        forever = ff.create_node(state=models.HOLD)
        old = ff.create_node(state=models.HOLD)
        ff.store.update_node(old['id'], state_time=time.time() - 61)
        launcher.run_pass()
        self.assertEqual(models.HOLD, ff.node(forever['id'])['state'])
        self.assertIn(ff.node(old['id'])['state'],
                      (models.USED, models.DELETING, None))

    def test_ignore_provider_quota(self):
        pool = {'name': 'own', 'max-servers': 5,
                'labels': [{'name': 'small'}]}
        ff, launcher = self.launcher({'quota': {'instances': 1}},
                                     pools=[pool])
        usage = ff_quota.Usage(ff.ctx, [])
        self.assertEqual(1, usage.available('fake-1', 'own').instances)
        pool['ignore-provider-quota'] = True
        ff, launcher = self.launcher({'quota': {'instances': 1}},
                                     pools=[pool])
        usage = ff_quota.Usage(ff.ctx, [])
        self.assertEqual(5, usage.available('fake-1', 'own').instances)
