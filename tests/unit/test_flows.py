"""Launch and delete flows run by real TaskFlow engines on the fake cloud."""

import time

import fixtures
from taskflow import engines
from taskflow import states

from fleetflow import exceptions
from fleetflow.execution import base as exec_base
from fleetflow.execution import local
from fleetflow import flowinfo
from fleetflow.flows import delete as delete_flows
from fleetflow.flows import launch as launch_flows
from fleetflow import node_states
from tests import base
from tests.unit import ssh_fixture


def _atoms(flow):
    """Every atom of a flow and its subflows, retries included."""
    found = []

    def walk(item):
        if hasattr(item, 'iter_links'):
            if getattr(item, 'retry', None) is not None:
                found.append(item.retry.name)
            for child, _meta in item.iter_nodes():
                walk(child)
        else:
            found.append(item.name)

    walk(flow)
    return found


class FlowTestCase(base.TestCase):

    def fleet(self, **kwargs):
        return self.useFixture(base.FleetflowFixture(**kwargs))

    def assertNoInstances(self, ff):
        self.assertEqual([], [i.external_id for i in ff.instances()])

    def retry_history(self, run, name='launch-attempts'):
        """The retry's history (TaskFlow empties it when reverted)."""
        return run.engine.storage.get_retry_history(name)

    def atom(self, ff, node_id, name, flow=-1):
        """An atom of the node's last flow, as flowinfo describes it."""
        atoms = flowinfo.describe_flows(ff.ctx, node_id)[flow]['atoms']
        return {a['name']: a for a in atoms}[name]


class TestLaunchAndDelete(FlowTestCase):

    def test_nodes_share_one_flow_and_its_compilation(self):
        ff = self.fleet(create_latency=0.2, delete_latency=0.1)
        nodes, runs = ff.launch_many(6)
        self.assertEqual([states.SUCCESS] * 6, [run.state for run in runs])
        flows = {id(run.engine._flow) for run in runs}
        self.assertEqual(1, len(flows))
        self.assertEqual(
            1, len({id(run.engine.compilation) for run in runs}))
        # Each node's flow has its own detail, store and results.
        self.assertEqual(6, len({run.flow_id for run in runs}))
        rows = [ff.node(node['id']) for node in nodes]
        self.assertEqual(6, len({row['external_id'] for row in rows}))
        self.assertEqual([node_states.READY] * 6,
                         [row['state'] for row in rows])
        self.assertEqual(
            ['launch-%s' % node['id'] for node in nodes],
            [run.name for run in runs])
        for row in rows:
            ff.store.set_node_state(row['id'], node_states.USED)
        deletes = [ff.runner.delete(row) for row in rows]
        for run in deletes:
            ff.wait_run(run)
        self.assertEqual([None] * 6, [ff.node(n['id']) for n in nodes])
        self.assertNoInstances(ff)

    def test_atom_names_unique(self):
        flows = [launch_flows.get_launch_flow(
            'n1', 'fake-1', 'main', 'small', 3, 60, 10, hkc)
            for hkc in (True, False)]
        flows.append(delete_flows.get_delete_flow('n1', 'fake-1', 30))
        for flow in flows:
            names = _atoms(flow)
            self.assertEqual(sorted(set(names)), sorted(names))
            # TaskFlow compiles it (it refuses duplicate names too).
            engines.load(flow, store={}).compile()
        self.assertIn('scan-host-keys', _atoms(flows[0]))
        self.assertNotIn('scan-host-keys', _atoms(flows[1]))


class TestFaults(FlowTestCase):

    def test_instance_error_fails_the_attempt_at_once(self):
        timeout = 20
        ff = self.fleet(create_latency=0.1, launch_timeout=timeout)
        ff.script_faults('instance-error', [True])
        start = time.time()
        node, run = ff.launch()
        elapsed = time.time() - start
        self.assertEqual(node_states.READY, node['state'])
        self.assertEqual(2, node['launch_attempts'])
        # The ERROR ended the first attempt long before launch-timeout.
        self.assertLess(elapsed, timeout / 2)
        [failure] = [f for _n, f in
                     self.retry_history(run).outcomes_iter(0)]
        self.assertTrue(failure.check(exceptions.InstanceErrorState))
        # The instance in ERROR was deleted: only the second one is left.
        self.assertEqual([node['external_id']],
                         [i.external_id for i in ff.instances()])

    def test_quota_exceeded_aborts(self):
        ff = self.fleet(quota={'instances': 1})
        first, _run = ff.launch()
        self.assertEqual(node_states.READY, first['state'])
        node, run = ff.launch()
        self.assertEqual(node_states.ABORTED, node['state'])
        self.assertIn('quota exceeded for instances', node['failure'])
        self.assertEqual(2, ff.driver.call_counts()['create'])

    def test_rate_limit_waits_until_the_given_time(self):
        delay = 0.5
        ff = self.fleet(rate_limit_delay=delay, workers=1)
        ff.script_faults('rate-limit', [True])
        start = time.time()
        node = ff.create_node()
        limited = ff.runner.launch(node)
        # The waiting flow holds no worker: with one worker, another
        # node launches while the first waits.
        other, other_run = ff.launch()
        self.assertEqual(node_states.READY, other['state'])
        self.assertFalse(limited.done.is_set())
        ff.wait_run(limited)
        node = ff.node(node['id'])
        self.assertEqual(states.SUCCESS, limited.state)
        self.assertEqual(node_states.READY, node['state'])
        # Not an attempt spent: the retry ran again for attempt 1.
        self.assertEqual(1, node['launch_attempts'])
        history = self.retry_history(limited)
        self.assertEqual(2, len(history))
        self.assertEqual([1, 1], [history[i][0] for i in range(2)])
        created = {i.external_id: i for i in ff.instances()}
        self.assertIn(node['external_id'], created)
        # It was created no sooner than the cloud allowed.
        rows = {r['external_id']: r for r in ff.driver.instance_history()}
        self.assertGreaterEqual(rows[node['external_id']]['created'],
                                start + delay)
        self.assertEqual(3, ff.driver.call_counts()['create'])

    def test_create_errors_exhaust_retries(self):
        ff = self.fleet(launch_retries=3, faults={'create-error': 1})
        node, run = ff.launch()
        self.assertEqual(node_states.FAILED, node['state'])
        self.assertIn('simulated create error', node['failure'])
        self.assertEqual(3, ff.driver.call_counts()['create'])
        self.assertEqual(
            3, self.atom(ff, node['id'], 'launch-attempts')['attempts'])
        self.assertNoInstances(ff)

    def test_launch_timeout(self):
        ff = self.fleet(create_latency=30, launch_timeout=0.5,
                        launch_retries=1)
        start = time.time()
        node, run = ff.launch()
        self.assertLess(time.time() - start, 15)
        self.assertEqual(node_states.FAILED, node['state'])
        self.assertIsInstance(run.error, exceptions.LaunchTimeout)
        poll = self.atom(ff, node['id'], 'wait-instance-active')
        self.assertIn('not active within launch-timeout', poll['failure'])
        self.assertIn('launch-timeout', node['failure'])
        self.assertNoInstances(ff)


class TestRevertWaitsParked(FlowTestCase):
    """A reverted attempt's instance is waited for with no worker held."""

    def slow_fleet(self, **kwargs):
        # Deleted instances stay until end_delete(): the test says when.
        return self.fleet(create_latency=0.05, delete_latency=3600,
                          **kwargs)

    @staticmethod
    def end_delete(ff, external_id):
        ff.driver._connection().execute(
            'UPDATE instances SET gone_at = ? WHERE id = ?',
            (time.time(), external_id))

    @staticmethod
    def history_of(ff, node):
        return [r for r in ff.driver.instance_history()
                if r['node_id'] == node['id']]

    def test_next_attempt_waits_parked_for_the_last_instance_gone(self):
        ff = self.slow_fleet(workers=1)
        ff.script_faults('instance-error', [True])
        slow = ff.create_node()
        slow_run = ff.runner.launch(slow)
        # The first attempt's instance went to ERROR; its revert asked for
        # the delete, which does not end.
        ff.wait_for(lambda: any(r['gone_at'] for r in
                                self.history_of(ff, slow)))
        # The only worker is free: another node launches meanwhile.
        other, other_run = ff.launch()
        self.assertEqual(states.SUCCESS, other_run.state)
        self.assertEqual(node_states.READY, other['state'])
        self.assertFalse(slow_run.done.is_set())
        [first] = self.history_of(ff, slow)
        self.assertEqual(first['external_id'],
                         ff.node(slow['id'])['external_id'])
        self.assertGreaterEqual(ff.runner.parks, 1)
        # Once the first instance is gone, the next attempt creates.
        self.end_delete(ff, first['external_id'])
        ff.wait_run(slow_run)
        self.assertEqual(states.SUCCESS, slow_run.state)
        first, second = self.history_of(ff, slow)
        self.assertLessEqual(first['gone_at'], second['created'])
        node = ff.node(slow['id'])
        self.assertEqual(node_states.READY, node['state'])
        self.assertEqual(second['external_id'], node['external_id'])
        self.assertEqual(2, node['launch_attempts'])

    def test_last_revert_leaves_the_delete_to_the_delete_flow(self):
        ff = self.slow_fleet(launch_retries=1)
        ff.script_faults('instance-error', [True])
        node, run = ff.launch()
        # The revert did not wait for the delete it asked for.
        self.assertEqual(states.REVERTED, run.state)
        self.assertEqual(node_states.FAILED, node['state'])
        [instance] = ff.instances()
        self.assertEqual(instance.external_id, node['external_id'])
        # The delete flow waits for it, parked, then removes the node.
        parks = ff.runner.parks
        delete_run = ff.runner.delete(node)
        ff.wait_for(lambda: ff.runner.parks > parks)
        self.assertIsNotNone(ff.node(node['id']))
        self.end_delete(ff, instance.external_id)
        ff.wait_run(delete_run)
        self.assertEqual(states.SUCCESS, delete_run.state)
        self.assertIsNone(ff.node(node['id']))
        self.assertNoInstances(ff)


class TestParking(FlowTestCase):

    def test_a_poll_that_would_wait_is_parked_before_it_runs(self):
        # One worker, three launches: the first reaches its poll while the
        # others wait for the worker, and its instance is still building.
        ff = self.fleet(create_latency=0.5, workers=1)
        nodes, runs = ff.launch_many(3)
        self.assertEqual([states.SUCCESS] * 3, [run.state for run in runs])
        self.assertGreaterEqual(ff.runner.parks, 1)
        first = nodes[0]['id']
        # Parked before the poll, not failed by it: the poll ran once, on
        # an active instance, and its controller never retried.
        self.assertEqual(1, self.atom(ff, first, 'wait-instance-active')
                         ['attempts'])
        self.assertEqual(1, len(self.retry_history(
            runs[0], 'wait-active-deadline')))
        self.assertEqual(node_states.READY, ff.node(first)['state'])

    def test_a_woken_flow_runs_before_new_ones(self):
        ff = self.fleet(create_latency=0.1, workers=1)
        nodes, runs = ff.launch_many(30)
        first_ready = self.atom(ff, nodes[0]['id'], 'mark-ready')['ended']
        last_created = self.atom(ff, nodes[-1]['id'],
                                 'create-instance')['started']
        # The first node's instance was active long before the last node
        # had its turn: woken, its flow went ahead of the new ones.
        self.assertLess(first_ready, last_created)


class TestKeyscan(FlowTestCase):

    def test_keys_of_a_real_ssh_server(self):
        server = self.useFixture(ssh_fixture.SSHServerFixture())
        ff = self.fleet(host_key_checking=True, interface_ip='127.0.0.1',
                        connection_port=server.port)
        node, run = ff.launch()
        self.assertEqual(states.SUCCESS, run.state, run.error)
        self.assertEqual(node_states.READY, node['state'])
        self.assertEqual(server.keys, sorted(node['host_keys']))
        self.assertEqual(server.port, node['connection_port'])
        scan = self.atom(ff, node['id'], 'scan-host-keys')
        self.assertEqual(states.SUCCESS, scan['state'])

    def test_nothing_listens_until_the_second_attempt(self):
        boot_timeout = 1.0
        # The port is taken but refuses connections until listen().
        server = self.useFixture(ssh_fixture.SSHServerFixture(
            listen_delay=None))
        ff = self.fleet(host_key_checking=True, interface_ip='127.0.0.1',
                        connection_port=server.port, launch_retries=2,
                        boot_timeout=boot_timeout)
        node = ff.create_node()
        run = ff.runner.launch(node)
        ff.wait_for(lambda: ff.driver.call_counts()['create'] == 2,
                    timeout=15)
        server.listen()
        ff.wait_run(run)
        node = ff.node(node['id'])
        self.assertEqual(node_states.READY, node['state'], node['failure'])
        self.assertEqual(2, node['launch_attempts'])
        self.assertEqual(server.keys, sorted(node['host_keys']))
        first, second = ff.driver.instance_history()
        # The first attempt scanned for boot-timeout, then its instance
        # was deleted before the second one was created.
        self.assertIsNotNone(first['gone_at'])
        self.assertLessEqual(first['gone_at'], second['created'])
        self.assertGreaterEqual(second['created'] - first['created'],
                                boot_timeout)
        [failure] = [f for _n, f in
                     self.retry_history(run).outcomes_iter(0)]
        self.assertTrue(failure.check(exceptions.KeyscanError), failure)
        self.assertIn('did not answer SSH within boot-timeout',
                      failure.exception_str)
        self.assertEqual([second['external_id']],
                         [i.external_id for i in ff.instances()])


class TestResume(FlowTestCase):

    def inputs(self, ff, node):
        return dict(node_id=node['id'], provider=node['provider'],
                    pool=node['pool'], label=node['label'],
                    launch_retries=3, launch_timeout=60, boot_timeout=10,
                    host_key_checking=False)

    def test_a_bad_logbook_does_not_stop_resume_all(self):
        ff = self.fleet()
        twice = ff.create_node()
        for _ in range(2):
            ff.runner.record_flow(twice['id'], 'launch',
                                  self.inputs(ff, twice))
        other = ff.create_node()
        ff.runner.record_flow(other['id'], 'launch',
                              self.inputs(ff, other))
        # One flow of each node runs; the second of the first is left.
        self.assertEqual(2, ff.runner.resume_all())
        self.assertIn('not resumed', self.logger.output)
        for node in (twice, other):
            ff.wait_for(
                lambda: ff.node(node['id'])['state'] == node_states.READY)

    def test_a_stop_while_a_flow_loads_suspends_it(self):
        # A SIGTERM soon after a start finds flows still being loaded.
        ff = self.fleet()
        node = ff.create_node()
        listen = exec_base.listen

        def listen_until_stopping(engine, ctx):
            listen(engine, ctx)
            ff.wait_for(lambda: ff.runner._stopping)

        self.useFixture(fixtures.MockPatchObject(
            exec_base, 'listen', side_effect=listen_until_stopping))
        run = ff.runner.launch(node)
        ff.wait_for(lambda: run.engine is not None)
        ff.runner.stop()
        self.assertEqual(states.SUSPENDED, run.state)
        self.assertEqual(0, ff.driver.call_counts().get('create', 0))
        self.useFixture(fixtures.MockPatchObject(exec_base, 'listen',
                                                 listen))
        runner = local.LocalRunner(ff.ctx, workers=2)
        self.addCleanup(runner.stop)
        self.assertEqual(1, runner.resume_all())
        ff.wait_for(lambda: ff.node(node['id'])['state'] == node_states.READY)
