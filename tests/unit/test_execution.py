"""One suite of scenarios for both ways to run flows.

:class:`ExecutionScenarios` runs the same flows, with the same faults of
the fake cloud, the same stop and resume, and the same idle launcher,
against each implementation of :class:`~fleetflow.execution.base.
FlowRunner`: in this process on SQLite, and through a jobboard (Redis,
then ZooKeeper) with a conductor, on PostgreSQL. Each test says what the
database and the cloud show, never how the runner got there.
"""

import os
import signal
import time

from taskflow import states

from fleetflow.db import models
from fleetflow.execution import base as exec_base
from fleetflow.execution import conductor as ff_conductor
from fleetflow.execution import local
from fleetflow.execution import posting
from fleetflow.execution import processes
from fleetflow import flowinfo
from fleetflow import launcher as ff_launcher
from fleetflow import layout as ff_layout
from fleetflow import node_states
from tests import base
from tests import db_urls
from tests.unit import test_jobboard

#: seconds a flow of these scenarios may take, on a loaded machine
FLOW_TIMEOUT = 30


class ExecutionScenarios:
    """Scenarios every runner must pass; subclasses say how it runs."""

    def fleet(self, **kwargs):
        """A started fixture on the fake cloud, and ``self.runner``."""
        raise NotImplementedError

    def restart(self):
        """Stop running flows (at a task boundary) and run them anew."""
        raise NotImplementedError

    def runs(self, node_id):
        """Whether the node has a flow running, as the runner knows now."""
        return self.runner.is_running(node_id)

    # What the tests read

    def wait_flow(self, node_id, timeout=FLOW_TIMEOUT):
        """Wait until the node has no flow running; its last flow's state.

        None when the node and its logbook are gone (a delete finished).
        """
        self.ff.wait_for(lambda: not self.runs(node_id), timeout=timeout,
                         message='flow of node %s still runs' % node_id)
        if self.ff.node(node_id) is None:
            # Its logbook goes as its flow ends.
            self.ff.wait_for(lambda: not flowinfo.describe_flows(
                self.ff.ctx, node_id), timeout=timeout)
            return None
        return flowinfo.describe_flows(self.ff.ctx, node_id)[-1]['state']

    def launch(self, **fields):
        """Create a node and launch it; ``(node row, flow state)``."""
        node = self.ff.create_node(**fields)
        self.runner.launch(node)
        state = self.wait_flow(node['id'])
        return self.ff.node(node['id']), state

    def delete(self, node):
        """Delete a node (a ready one is used first); its flow's state."""
        if self.ff.node(node['id'])['state'] == node_states.READY:
            self.ff.store.set_node_state(node['id'], node_states.USED)
        self.runner.delete(self.ff.node(node['id']))
        return self.wait_flow(node['id'])

    def atom(self, node_id, name):
        atoms = flowinfo.describe_flows(self.ff.ctx, node_id)[-1]['atoms']
        return {a['name']: a for a in atoms}[name]

    def assertNoInstances(self):
        self.assertEqual([], [i.external_id for i in self.ff.instances()])

    # Flows

    def test_launch_then_delete(self):
        self.fleet(create_latency=0.1, delete_latency=0.1)
        node, state = self.launch()
        self.assertEqual(states.SUCCESS, state)
        self.assertEqual(node_states.READY, node['state'])
        self.assertEqual(1, node['launch_attempts'])
        self.assertEqual('198.51.100.1', node['interface_ip'])
        self.assertEqual('test-host', node['launcher'])
        [instance] = self.ff.instances()
        self.assertEqual(node['external_id'], instance.external_id)
        self.assertEqual(node['id'], instance.node_id)
        # The node is gone, and its logbook with it.
        self.assertIsNone(self.delete(node))
        self.assertIsNone(self.ff.node(node['id']))
        self.assertNoInstances()
        counts = self.ff.driver.call_counts()
        self.assertEqual((1, 1), (counts['create'], counts['delete']))

    # Faults

    def test_create_error_then_success(self):
        self.fleet()
        self.ff.script_faults('create-error', [True])
        node, state = self.launch()
        self.assertEqual(states.SUCCESS, state)
        self.assertEqual(node_states.READY, node['state'])
        self.assertEqual(2, node['launch_attempts'])
        attempts = self.atom(node['id'], 'launch-attempts')
        self.assertEqual(2, attempts['attempts'])
        self.assertIn('simulated create error',
                      attempts['history'][0]['failures']['create-instance'])
        self.assertEqual(2, self.ff.driver.call_counts()['create'])
        self.assertEqual([node['external_id']],
                         [i.external_id for i in self.ff.instances()])

    def assert_aborts_without_spending_an_attempt(self, fault, message):
        self.fleet(launch_retries=3)
        self.ff.script_faults(fault, [True])
        node, state = self.launch()
        self.assertEqual(states.REVERTED, state)
        self.assertEqual(node_states.ABORTED, node['state'])
        self.assertIn(message, node['failure'])
        self.assertEqual(1, self.ff.driver.call_counts()['create'])
        self.assertEqual(
            1, self.atom(node['id'], 'launch-attempts')['attempts'])
        self.assertNoInstances()

    def test_quota_error_aborts_without_spending_an_attempt(self):
        self.assert_aborts_without_spending_an_attempt(
            'quota-error', 'simulated quota error')

    def test_no_capacity_aborts_without_spending_an_attempt(self):
        # The instance is made, then goes to ERROR: it is deleted.
        self.assert_aborts_without_spending_an_attempt(
            'capacity-error', 'no valid host')

    def test_launch_retries_exhausted(self):
        self.fleet(launch_retries=2, faults={'instance-error': 1})
        node, state = self.launch()
        self.assertEqual(states.REVERTED, state)
        self.assertEqual(node_states.FAILED, node['state'])
        self.assertEqual(2, node['launch_attempts'])
        self.assertIn('went to ERROR', node['failure'])
        # Each attempt's instance was deleted by the attempt's revert.
        self.assertNoInstances()
        history = self.ff.driver.instance_history()
        self.assertEqual(2, len(history))
        self.assertTrue(all(r['gone_at'] for r in history))

    def test_revert_deletes_even_when_a_delete_fails(self):
        self.fleet(create_latency=0.05)
        self.ff.script_faults('instance-error', [True])
        self.ff.script_faults('delete-error', [True])
        node, state = self.launch()
        self.assertEqual(states.SUCCESS, state)
        self.assertEqual(node_states.READY, node['state'])
        first, second = self.ff.driver.instance_history()
        # The first instance was gone before the second was created.
        self.assertIsNotNone(first['gone_at'])
        self.assertLessEqual(first['gone_at'], second['created'])
        self.assertEqual([node['external_id']],
                         [i.external_id for i in self.ff.instances()])

    def test_delete_error_leaves_node_deleting(self):
        self.fleet()
        node, _state = self.launch()
        self.ff.script_faults('delete-error', [True])
        self.assertEqual(states.REVERTED, self.delete(node))
        self.assertIn('simulated delete error',
                      self.atom(node['id'], 'delete-instance')['failure'])
        self.assertEqual(node_states.DELETING,
                         self.ff.node(node['id'])['state'])
        self.assertEqual(1, len(self.ff.instances()))
        # Deleting again later succeeds.
        self.assertIsNone(self.delete(node))
        self.assertNoInstances()

    # Stop and resume

    def test_stopped_flow_resumes_where_it_stopped(self):
        self.fleet(create_latency=1.5)
        node = self.ff.create_node()
        self.runner.launch(node)
        self.ff.wait_for(lambda: self.ff.driver.call_counts().get('create'))
        self.restart()
        self.assertEqual(states.SUCCESS, self.wait_flow(node['id']))
        self.assertEqual(node_states.READY, self.ff.node(node['id'])['state'])
        # The resumed flow found the instance it had made: no second one.
        self.assertEqual(1, self.ff.driver.call_counts()['create'])
        self.assertEqual(1, len(self.ff.driver.instance_history()))

    def test_a_recorded_flow_never_started_is_resumed(self):
        # A process that recorded a flow and died before running it.
        self.fleet()
        node = self.ff.create_node()
        self.runner.record_flow(node['id'], 'launch',
                                self.runner.inputs(node, 'launch'))
        self.assertEqual(1, self.runner.resume_all())
        self.assertEqual(states.SUCCESS, self.wait_flow(node['id']))
        self.assertEqual(node_states.READY, self.ff.node(node['id'])['state'])
        self.assertEqual(0, self.runner.resume_all())

    # The launcher that holds the runner

    IDLE = 2.0

    def test_an_idle_launcher_makes_few_queries(self):
        # The launcher starts the context.
        self.fleet(start=False)
        self.ff.conf.set_override('request_interval', 60, 'launcher')
        self.addCleanup(self.ff.conf.clear_override, 'request_interval',
                        'launcher')
        launcher = ff_launcher.Launcher(self.ff.ctx, self.runner)
        launcher.start()
        self.addCleanup(launcher.stop)
        self.ff.wait_for(lambda: launcher.passes >= 1)
        time.sleep(0.2)
        stores = (launcher.store, self.ff.store)
        before = sum(store.statements for store in stores)
        time.sleep(self.IDLE)
        idle = sum(store.statements for store in stores) - before
        # A SQLite file shows a commit without a query; elsewhere the
        # request marker is read less and less often, at least once a
        # second (a tick is 0.05 s: 40 reads would be made in 2 s).
        self.assertLessEqual(idle, 0 if launcher._probe.visible else 8)
        self.assertEqual(0, launcher.runner.running())
        # Yet a request is seen, and served, without waiting a minute.
        request = self.ff.store.create_request(['small'])
        self.ff.wait_for(lambda: self.ff.store.get_request(request['id'])
                         ['state'] == models.FULFILLED,
                         timeout=FLOW_TIMEOUT)


class TestLocalRunner(ExecutionScenarios, base.TestCase):
    """Flows in this process, on SQLite."""

    def fleet(self, **kwargs):
        self.ff = self.useFixture(base.FleetflowFixture(runner=False,
                                                        **kwargs))
        self.runner = self.new_runner()
        return self.ff

    def new_runner(self):
        runner = local.LocalRunner(self.ff.ctx, workers=4)
        self.addCleanup(runner.stop)
        return runner

    def restart(self):
        self.runner.stop()
        self.runner = self.new_runner()
        self.assertEqual(1, self.runner.resume_all())


class TestProcessRunner(ExecutionScenarios, base.TestCase):
    """Flows in two flow processes of this process, on SQLite."""

    def fleet(self, **kwargs):
        self.ff = self.useFixture(base.FleetflowFixture(runner=False,
                                                        **kwargs))
        self.runner = self.new_runner()
        return self.ff

    def new_runner(self):
        runner = processes.ProcessRunner(self.ff.ctx, 2)
        self.addCleanup(runner.stop)
        runner.start()
        return runner

    def restart(self):
        self.runner.stop()
        self.runner = self.new_runner()
        self.assertEqual(1, self.runner.resume_all())

    def process_of(self, node_id):
        """The flow process that runs the node's flow."""
        return self.runner._runs[node_id].process.process

    def test_flows_are_spread_and_only_the_launcher_lists(self):
        # One worker each: flows queue, and those that wait are parked.
        self.fleet(create_latency=0.3, delete_latency=0.1,
                   conf_overrides={('launcher', 'workers'): 1})
        nodes = [self.ff.create_node() for _ in range(6)]
        for node in nodes:
            self.runner.launch(node)
        pids = {self.process_of(node['id']).pid for node in nodes}
        for node in nodes:
            self.assertEqual(states.SUCCESS, self.wait_flow(node['id']))
            self.delete(self.ff.node(node['id']))
        # Both processes ran flows, and the flows waited for their
        # instances in this process, on its one listing: parked here, or
        # in their tasks on it; no flow process listed.
        self.assertEqual(2, len(pids))
        self.assertNotIn(os.getpid(), pids)
        self.assertGreater(self.runner.parks, 0)
        self.assertEqual(self.ff.provider.cache.listings,
                         self.ff.driver.call_counts()['list'])
        self.assertNoInstances()

    def test_a_killed_flow_process_is_started_again_and_resumes(self):
        self.fleet(create_latency=1.5)
        node = self.ff.create_node()
        self.runner.launch(node)
        self.ff.wait_for(lambda: self.ff.driver.call_counts().get('create'))
        killed = self.process_of(node['id'])
        os.kill(killed.pid, signal.SIGKILL)
        self.assertEqual(states.SUCCESS, self.wait_flow(node['id']))
        self.assertEqual(node_states.READY, self.ff.node(node['id'])['state'])
        # The resumed flow found the instance it had made: no second one.
        self.assertEqual(1, self.ff.driver.call_counts()['create'])
        self.assertFalse(killed.is_alive())
        self.assertEqual(2, sum(process.process.is_alive()
                                for process in self.runner._processes))

    def test_their_database_transactions_are_counted(self):
        self.fleet()
        self.assertEqual(states.SUCCESS, self.launch()[1])
        # The launch's own: its record, its atoms, its node's changes.
        self.assertGreater(self.runner.transactions, 5)

    def test_one_flow_process_per_cpu_by_default(self):
        conf = self.fleet().conf
        conf.set_override('flow_processes', 0, 'launcher')
        self.assertEqual(min(processes.AUTO_MAX,
                             len(os.sched_getaffinity(0))),
                         processes.flow_processes(conf))
        conf.set_override('flow_processes', 6, 'launcher')
        self.assertEqual(6, processes.flow_processes(conf))

    def test_the_flow_processes_log_through_this_process(self):
        self.fleet()
        node, state = self.launch()
        self.assertEqual(states.SUCCESS, state)
        # A task's line, logged by the flow process's worker thread.
        self.assertRegex(self.logger.output,
                         r'fleetflow-flow_\d+ fleetflow.tasks.nodes INFO '
                         r'\[node %s\] ' % node['id'])

    def test_a_reloaded_layout_reaches_the_flow_processes(self):
        self.fleet()
        data = dict(self.ff.layout_data)
        data['providers'] = data['providers'] + [base.fake_provider(
            name='fake-2', cloud_path=self.ff.cloud_path)]
        layout = ff_layout.Layout(data)
        self.ff.ctx.apply_layout(layout)
        self.runner.use_layout(layout)
        node = self.ff.create_node(provider='fake-2')
        self.runner.launch(node)
        self.assertEqual(states.SUCCESS, self.wait_flow(node['id']))
        self.assertEqual('fake-2', self.ff.node(node['id'])['provider'])


class JobboardScenarios(ExecutionScenarios):
    """Flows posted on a jobboard and run by a conductor, on PostgreSQL."""

    backend = None

    def fleet(self, **kwargs):
        self.ff, self.board, self.runner = test_jobboard.board_fleet(
            self, self.backend, 4, db_url=db_urls.postgres_url(self),
            **kwargs)
        self.conductor = self.new_conductor()
        return self.ff

    def new_conductor(self):
        self.finished = []
        conductor = ff_conductor.Conductor(self.ff.ctx, self.board,
                                           on_done=self.finished.append)
        conductor.start()
        self.addCleanup(conductor.stop)
        return conductor

    def runs(self, node_id):
        return node_id in self.runner.refresh()

    def restart(self):
        # The job goes back on the board; another conductor resumes it.
        self.conductor.stop()
        self.assertEqual(0, self.runner.resume_all())
        self.conductor = self.new_conductor()

    def test_the_conductor_reports_each_flow_that_ended(self):
        self.fleet()
        node, _state = self.launch()
        self.delete(node)
        self.ff.wait_for(lambda: len(self.finished) == 2)
        self.assertEqual(['launch-%s' % node['id'], 'delete-%s' % node['id']],
                         [job.name for job in self.finished])


class TestJobboardOnRedis(JobboardScenarios, base.TestCase):
    backend = 'redis'


class TestJobboardOnZooKeeper(JobboardScenarios, base.TestCase):
    backend = 'zookeeper'


class TestInterface(base.TestCase):

    def test_the_interface_is_what_the_runners_share(self):
        # No runner inherits from another; those whose flows run on this
        # host share what knowing them by node takes.
        for runner in (local.LocalRunner, processes.ProcessRunner):
            self.assertEqual((runner, exec_base.HostRunner,
                              exec_base.FlowRunner, object), runner.__mro__)
        self.assertEqual((posting.JobboardRunner, exec_base.FlowRunner,
                          object), posting.JobboardRunner.__mro__)
