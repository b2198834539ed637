"""The launcher's pass and flow callbacks, without its process."""

import copy
import time

import fixtures
from taskflow import states

from fleetflow.db import models
from fleetflow import exceptions
from fleetflow.execution import base as exec_base
from fleetflow import flowinfo
from fleetflow import launcher as ff_launcher
from fleetflow import layout
from fleetflow import node_states
from fleetflow import quota as ff_quota
from tests import base
from tests import db_urls


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
        self.assertEqual(node_states.IN_USE, ff.node(node['id'])['state'])

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
        node = ff.create_node(state=node_states.DELETING)
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
            self.assertEqual(min(attempt + 2, exec_base.FLOWS_KEPT + 1),
                             len(flows))
        # The newest ones are kept: the last failures, not the launch.
        self.assertNotIn('launch-%s' % node['id'],
                         {flow['name'] for flow in flows})
        self.assertEqual(node_states.DELETING, ff.node(node['id'])['state'])
        self.assertEqual(states.SUCCESS,
                         ff.delete(ff.node(node['id'])).state)
        self.assertIsNone(ff.node(node['id']))
        self.assertEqual([], flowinfo.describe_flows(ff.ctx, node['id']))
        self.assertEqual([], [i for i in ff.instances()
                              if i.node_id == node['id']])


class RequestBoundsTests:
    """Requests that could block or exhaust the launcher; ``db_url``."""

    def launcher(self, max_servers=5, **overrides):
        provider = base.fake_provider()
        if max_servers is not None:
            provider['pools'][0]['max-servers'] = max_servers
        ff = self.useFixture(base.FleetflowFixture(
            layout={'labels': [{'name': base.LABEL}],
                    'providers': [provider]},
            db_url=self.db_url(), runner=False,
            conf_overrides={('launcher', k): v
                            for k, v in overrides.items()}))
        # oslo.config keeps overrides on the groups that every ConfigOpts
        # of the process shares: leave none to the next test
        for name in overrides:
            self.addCleanup(ff.conf.clear_override, name, 'launcher')
        self.addCleanup(ff.conf.clear_override, 'connection', 'database')
        launcher = ff_launcher.Launcher(ff.ctx)
        self.addCleanup(launcher.runner.stop)
        return ff, launcher

    def test_request_no_pool_can_ever_hold_is_declined(self):
        ff, launcher = self.launcher(max_servers=5)
        big = ff.store.create_request([base.LABEL] * 6)
        small = ff.store.create_request([base.LABEL] * 5)
        launcher.run_pass()
        big = ff.store.get_request(big['id'])
        self.assertEqual(models.REQUEST_FAILED, big['state'])
        self.assertEqual('6 nodes are more than any pool that serves their '
                         'labels can ever hold (fake-1/main instances 5)',
                         big['reason'])
        # and it does not hold back the requests after it
        self.assertEqual(models.PENDING,
                         ff.store.get_request(small['id'])['state'])
        self.assertEqual([], ff.store.list_nodes(request_id=big['id']))

    def test_rows_the_client_would_refuse_are_declined(self):
        ff, launcher = self.launcher(max_servers=None)
        rows = [ff.store.create_request([base.LABEL] * 51),
                ff.store.create_request([base.LABEL], priority=-1),
                ff.store.create_request([base.LABEL, 7])]
        launcher.run_pass()
        reasons = [ff.store.get_request(row['id'])['reason']
                   for row in rows]
        self.assertEqual(
            ['a request may ask for at most 50 nodes ([requests] '
             'max_nodes), not 51',
             'priority must be an integer from 0 to 1000000, not -1',
             'label names must be non-empty strings: [7]'], reasons)
        self.assertEqual({models.REQUEST_FAILED},
                         {ff.store.get_request(row['id'])['state']
                          for row in rows})
        self.assertEqual([], ff.store.list_nodes())

    def test_launches_per_pass_bounded(self):
        ff, launcher = self.launcher(max_servers=None,
                                     max_launches_per_pass=3)
        requests = [ff.store.create_request([base.LABEL, base.LABEL])
                    for _ in range(3)]
        launcher.run_pass()
        states = [ff.store.get_request(r['id'])['state'] for r in requests]
        # a request is served whole: 2 + 2 launches, then the pass stops
        self.assertEqual([models.PENDING, models.PENDING, models.REQUESTED],
                         states)
        self.assertEqual(4, len(ff.store.list_nodes()))
        self.assertTrue(launcher._wake.is_set())


class TestRequestBoundsSQLite(RequestBoundsTests, base.TestCase):

    def db_url(self):
        return None


class TestRequestBoundsPostgres(RequestBoundsTests, base.TestCase):

    def db_url(self):
        return db_urls.postgres_url(self)


class TestIdleLauncher(base.TestCase):
    """An idle launcher makes next to no query, yet sees a new request."""

    IDLE = 1.5

    def setUp(self):
        super().setUp()
        self.ff = self.useFixture(base.FleetflowFixture(
            runner=False,
            conf_overrides={('launcher', 'request_interval'): 60}))
        self.launcher = ff_launcher.Launcher(self.ff.ctx)
        self.addCleanup(self.launcher.runner.stop)
        self.launcher._scheduler.start()
        self.addCleanup(self.launcher._scheduler.stop)
        # The first pass, at start.
        self.ff.wait_for(lambda: self.launcher.passes >= 1)

    def statements_while_idle(self):
        before = self.launcher.store.statements
        time.sleep(self.IDLE)
        return self.launcher.store.statements - before

    def test_no_query_on_a_sqlite_file_until_a_commit(self):
        self.assertTrue(self.launcher._probe.visible)
        self.assertEqual(0, self.statements_while_idle())
        # A request written by another connection (another process's
        # client) wakes a pass: request_interval is a minute.
        request = self.ff.store.create_request(['small'])
        self.ff.wait_for(lambda: self.ff.store.list_nodes(
            request_id=request['id']), timeout=30)

    def test_marker_reads_back_off_where_commits_are_not_visible(self):
        # As on PostgreSQL: only a query shows a commit.
        self.launcher._probe.visible = False
        statements = self.statements_while_idle()
        # Every tick (0.05 s) would be 30 reads; backing off to one a
        # second, at most 7 (0.05 + 0.1 + 0.2 + 0.4 + 0.8 + 1 s...).
        self.assertLessEqual(statements, 8)
        self.assertGreater(statements, 0)
        request = self.ff.store.create_request(['small'])
        self.ff.wait_for(lambda: self.ff.store.list_nodes(
            request_id=request['id']), timeout=30)


class TestPassSpacing(base.TestCase):

    def test_a_pass_that_waited_does_not_hold_off_the_next(self):
        # Passes are spaced by their CPU time, not by their waits.
        ff = self.useFixture(base.FleetflowFixture(
            runner=False,
            conf_overrides={('launcher', 'request_interval'): 60}))
        launcher = ff_launcher.Launcher(ff.ctx)
        self.addCleanup(launcher.runner.stop)
        list_requests = launcher.store.list_requests

        def kept_waiting(*args, **kwargs):
            time.sleep(2)   # a busy database, or a lock, or the CPU
            return list_requests(*args, **kwargs)

        launcher.store.list_requests = kept_waiting
        launcher.wake()
        launcher._tick()
        self.assertEqual(1, launcher.passes)
        launcher.store.list_requests = list_requests
        # A new request wakes the launcher: the next tick passes.
        request = ff.store.create_request(['small'])
        launcher.wake()
        launcher._tick()
        self.assertEqual(2, launcher.passes)
        self.assertEqual(1, len(ff.store.list_nodes(
            request_id=request['id'])))


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
        forever = ff.create_node(state=node_states.HOLD)
        old = ff.create_node(state=node_states.HOLD)
        ff.store.update_node(old['id'], state_time=time.time() - 61)
        launcher.run_pass()
        self.assertEqual(node_states.HOLD, ff.node(forever['id'])['state'])
        self.assertIn(ff.node(old['id'])['state'],
                      (node_states.USED, node_states.DELETING, None))

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
        self.assertEqual(5, usage.total('fake-1', 'own').instances)


class TestApplyLayout(base.TestCase):
    """A reloaded layout in the context: drivers made, kept and stopped."""

    def setUp(self):
        super().setUp()
        self.data = {'labels': [{'name': 'small'}],
                     'providers': [base.fake_provider(),
                                   base.fake_provider(name='fake-2')]}
        self.ff = self.useFixture(base.FleetflowFixture(
            layout=copy.deepcopy(self.data), runner=False))
        self.stopped = []
        for provider in self.ff.ctx.providers.values():
            self.watch_stop(provider)

    def watch_stop(self, provider):
        provider.driver.stop = lambda name=provider.name: \
            self.stopped.append(name)

    def reload(self, change):
        data = copy.deepcopy(self.data)
        change(data)
        for provider in data['providers']:
            provider.setdefault('state-path', self.ff.cloud_path)
        self.ff.ctx.apply_layout(layout.Layout(data))

    def test_unchanged_providers_keep_their_driver(self):
        before = dict(self.ff.ctx.providers)

        def lower(data):
            data['providers'][1]['pools'][0]['max-servers'] = 1
        self.reload(lower)
        after = self.ff.ctx.providers
        self.assertIs(before['fake-1'], after['fake-1'])
        self.assertIsNot(before['fake-2'], after['fake-2'])
        self.assertEqual(1, after['fake-2'].pool('main')['max-servers'])
        # the replaced driver is stopped once nothing waits on it
        self.assertEqual([], self.stopped)
        self.ff.ctx.retire_providers(with_nodes={'fake-1', 'fake-2'})
        self.assertEqual(['fake-2'], self.stopped)

    def test_a_removed_provider_stays_while_it_has_nodes(self):
        def remove(data):
            del data['providers'][1]
        self.reload(remove)
        self.assertNotIn('fake-2', self.ff.ctx.layout.providers)
        self.ff.ctx.retire_providers(with_nodes={'fake-2'})
        self.assertIn('fake-2', self.ff.ctx.providers)
        self.assertEqual([], self.stopped)
        self.ff.ctx.retire_providers(with_nodes=set())
        self.assertNotIn('fake-2', self.ff.ctx.providers)
        self.assertEqual(['fake-2'], self.stopped)

    def test_a_driver_that_does_not_start_changes_nothing(self):
        before = (self.ff.ctx.layout, dict(self.ff.ctx.providers))

        def add(data):
            data['providers'].append({'name': 'os', 'cloud': 'no-such-cloud',
                                      'pools': []})
        self.useFixture(fixtures.EnvironmentVariable(
            'OS_CLIENT_CONFIG_FILE', '/nonexistent/clouds.yaml'))
        self.assertRaises(exceptions.ConfigError, self.reload, add)
        self.assertEqual(before, (self.ff.ctx.layout, self.ff.ctx.providers))
