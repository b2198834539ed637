"""Each task's execute and revert, and the retry controllers' decisions.

The store, the drivers and the instance cache are mocks here; the flows
that put the tasks together run for real in test_flows.
"""

import time
from unittest import mock

import fixtures
from taskflow import retry as tf_retry
from taskflow.types import failure as tf_failure

from fleetflow import context
from fleetflow.drivers import base as driver_base
from fleetflow import exceptions
from fleetflow import node_states
from fleetflow import retries
from fleetflow.tasks import instances
from fleetflow.tasks import keyscan
from fleetflow.tasks import nodes
from tests import base

NODE = 'node-1'
PROVIDER = 'fake-1'


def failure_of(exc):
    try:
        raise exc
    except Exception:
        return tf_failure.Failure()


def instance(state=driver_base.ACTIVE, external_id='i-1', **fields):
    return driver_base.Instance(
        external_id=external_id, state=state,
        metadata={driver_base.META_NODE_ID: NODE},
        interface_ip='192.0.2.10' if state == driver_base.ACTIVE else None,
        region='r1', az='az1', **fields)


class TaskTestCase(base.TestCase):
    """A mock context set as the current one."""

    def setUp(self):
        super().setUp()
        self.ctx = mock.Mock(name='ctx')
        self.ctx.conf.host = 'host-1'
        self.ctx.conf.launcher.poll_attempt = 5.0
        self.ctx.conf.launcher.delete_timeout = 30
        self.ctx.worker_backlog = 0
        self.store = self.ctx.store
        self.store.find_node.return_value = {'id': NODE, 'request_id': None,
                                             'state': node_states.BUILDING}
        self.cloud = mock.Mock(name='provider')
        self.ctx.provider.return_value = self.cloud
        self.driver = self.cloud.driver
        self.cache = self.cloud.cache
        self.cache.interval = 0.05
        self.useFixture(fixtures.MockPatchObject(
            context, '_current', self.ctx))


class TestCreateInstance(TaskTestCase):

    def setUp(self):
        super().setUp()
        self.task = instances.CreateInstance(name='create-instance')
        self.driver.create_instance.return_value = instance(
            driver_base.BUILDING)

    def execute(self, attempt=1, launch_attempts=0):
        self.store.get_node.return_value = {
            'id': NODE, 'launch_attempts': launch_attempts}
        return self.task.execute(NODE, PROVIDER, 'main', 'small', attempt)

    def test_first_attempt_creates_without_lookup(self):
        result = self.execute(attempt=1, launch_attempts=0)
        self.driver.find_instance.assert_not_called()
        self.driver.create_instance.assert_called_once_with(
            NODE, self.cloud.pool.return_value,
            self.cloud.label.return_value,
            {driver_base.META_NODE_ID: NODE, driver_base.META_POOL: 'main',
             driver_base.META_PROVIDER: PROVIDER,
             driver_base.META_ATTEMPT: '1'})
        self.cloud.label.assert_called_once_with('main', 'small')
        self.assertEqual('i-1', result['external_id'])
        self.assertIn('created_at', result)

    def test_attempt_is_recorded_before_the_create(self):
        calls = mock.Mock()
        calls.attach_mock(self.store.update_node, 'update_node')
        calls.attach_mock(self.driver.create_instance, 'create_instance')
        self.execute(attempt=2, launch_attempts=1)
        self.assertEqual(['update_node', 'create_instance'],
                         [c[0] for c in calls.mock_calls])
        self.store.update_node.assert_called_once_with(
            NODE, launch_attempts=2)

    def test_next_attempt_creates_without_lookup(self):
        self.execute(attempt=2, launch_attempts=1)
        self.driver.find_instance.assert_not_called()
        self.driver.create_instance.assert_called_once()
        metadata = self.driver.create_instance.call_args[0][3]
        self.assertEqual('2', metadata[driver_base.META_ATTEMPT])

    def test_rerun_of_an_attempt_finds_its_instance(self):
        self.driver.find_instance.return_value = instance(
            driver_base.BUILDING, external_id='i-earlier')
        result = self.execute(attempt=2, launch_attempts=2)
        self.driver.find_instance.assert_called_once_with(NODE)
        self.driver.create_instance.assert_not_called()
        self.assertEqual('i-earlier', result['external_id'])

    def test_rerun_of_an_attempt_that_created_nothing_creates(self):
        self.driver.find_instance.return_value = None
        self.execute(attempt=1, launch_attempts=1)
        self.driver.find_instance.assert_called_once_with(NODE)
        self.driver.create_instance.assert_called_once()

    def test_create_error_propagates(self):
        self.driver.create_instance.side_effect = driver_base.QuotaError('q')
        self.assertRaises(driver_base.QuotaError, self.execute)

    def revert(self, result):
        self.task.revert(node_id=NODE, provider=PROVIDER, result=result,
                         flow_failures={})

    def test_revert_records_the_instance_then_asks_its_delete(self):
        calls = mock.Mock()
        calls.attach_mock(self.store.update_node, 'update_node')
        calls.attach_mock(self.driver.delete_instance, 'delete_instance')
        self.revert({'external_id': 'i-1', 'created_at': 1.0})
        self.assertEqual([
            mock.call.update_node(NODE, expected=[node_states.BUILDING],
                                  external_id='i-1'),
            mock.call.delete_instance('i-1')], calls.mock_calls)
        # It does not wait: the next attempt, or the delete flow, does.
        self.cloud.cache.watch.assert_not_called()

    def test_revert_leaves_the_instance_of_a_node_another_run_readied(self):
        # A conductor frozen past its claim wakes up and reverts its copy
        # of a launch that another conductor finished meanwhile.
        self.store.update_node.return_value = False
        for state in (node_states.READY, node_states.IN_USE):
            self.store.find_node.return_value = {'id': NODE,
                                                 'state': state}
            self.revert({'external_id': 'i-1', 'created_at': 1.0})
        self.driver.delete_instance.assert_not_called()

    def test_revert_deletes_the_instance_of_a_gone_node(self):
        self.store.update_node.return_value = False
        self.store.find_node.return_value = None
        self.revert({'external_id': 'i-1', 'created_at': 1.0})
        self.driver.delete_instance.assert_called_once_with('i-1')

    def test_revert_after_own_failure_does_nothing(self):
        self.revert(failure_of(driver_base.DriverError('create failed')))
        self.revert(None)
        self.driver.delete_instance.assert_not_called()
        self.store.update_node.assert_not_called()

    def test_revert_of_a_gone_instance(self):
        self.driver.delete_instance.side_effect = driver_base.NotFound('x')
        self.revert({'external_id': 'i-1', 'created_at': 1.0})
        self.driver.delete_instance.assert_called_once_with('i-1')

    def test_revert_whose_delete_fails_asks_once(self):
        self.driver.delete_instance.side_effect = driver_base.DriverError(
            'boom')
        self.revert({'external_id': 'i-1', 'created_at': 1.0})
        self.driver.delete_instance.assert_called_once_with('i-1')
        self.assertIn('asked again while it is waited for',
                      self.logger.output)


class TestWaitForLastInstanceGone(TaskTestCase):

    def setUp(self):
        super().setUp()
        self.task = instances.WaitForLastInstanceGone(
            name='wait-last-instance-gone', poll_timeout=30)
        self.store.get_node.return_value = {
            'id': NODE, 'external_id': 'i-1', 'launch_attempts': 1}

    def execute(self, known, current, attempt=2):
        self.cache.lookup.return_value = (known, current)
        return self.task.execute(NODE, PROVIDER, attempt,
                                 time.time() + 30)

    def test_nothing_to_wait_for(self):
        self.store.get_node.return_value = {
            'id': NODE, 'external_id': None, 'launch_attempts': 1}
        self.assertIsNone(self.execute(True, instance()))
        self.assertIsNone(self.task.waiting(NODE, PROVIDER, 2,
                                            time.time() + 30))
        self.cache.lookup.assert_not_called()

    def test_the_first_attempt_reads_nothing(self):
        self.assertIsNone(self.task.execute(NODE, PROVIDER, 1,
                                            time.time() + 30))
        self.store.get_node.assert_not_called()
        self.cache.lookup.assert_not_called()

    def test_an_attempt_that_created_already_waits_for_nothing(self):
        self.store.get_node.return_value = {
            'id': NODE, 'external_id': 'i-1', 'launch_attempts': 2}
        self.assertIsNone(self.execute(True, instance(), attempt=2))
        self.cache.lookup.assert_not_called()

    def test_gone_forgets_the_instance(self):
        self.execute(True, None)
        self.store.update_node.assert_called_once_with(
            NODE, expected=[node_states.BUILDING], external_id=None)
        self.driver.delete_instance.assert_not_called()

    def test_still_listed_waits(self):
        e = self.assertRaises(exceptions.StillWaiting, self.execute, True,
                              instance())
        self.assertEqual('i-1', e.external_id)
        self.assertEqual(driver_base.ACTIVE, e.seen_state)
        # The revert asked for the delete just now.
        self.driver.delete_instance.assert_not_called()
        self.store.update_node.assert_not_called()

    def test_still_listed_a_poll_attempt_later_asks_the_delete_again(self):
        # The wait began 120 s before its deadline, 30 s from now: 90 s
        # ago, more than poll_attempt (5 s).
        self.task.poll_timeout = 120
        self.cache.lookup.return_value = (True, instance())
        deadline = time.time() + 30
        self.assertIsNone(self.task.waiting(NODE, PROVIDER, 2, deadline))
        self.assertRaises(exceptions.StillWaiting, self.task.execute, NODE,
                          PROVIDER, 2, deadline)
        self.driver.delete_instance.assert_called_once_with('i-1')

    def test_being_deleted_or_not_listed_yet_is_not_asked_again(self):
        self.task.poll_timeout = 120
        for known, current in ((True, instance(driver_base.DELETING)),
                               (False, None)):
            self.assertRaises(exceptions.StillWaiting, self.execute, known,
                              current)
            self.assertIsInstance(
                self.task.waiting(NODE, PROVIDER, 2, time.time() + 30),
                exceptions.StillWaiting)
        self.driver.delete_instance.assert_not_called()

    def test_waiting_reads_the_listing_after_the_wait_began(self):
        self.cache.lookup.return_value = (True, instance())
        deadline = time.time() + 30
        reason = self.task.waiting(NODE, PROVIDER, 2, deadline)
        self.assertIsInstance(reason, exceptions.StillWaiting)
        self.cache.lookup.assert_called_once_with('i-1', deadline - 30)

    def test_still_there_at_the_deadline_fails_the_attempt(self):
        self.cache.lookup.return_value = (True, instance())
        self.assertRaises(driver_base.DriverError, self.task.execute, NODE,
                          PROVIDER, 2, time.time() - 1)


class TestWaitForInstanceActive(TaskTestCase):

    def setUp(self):
        super().setUp()
        self.task = instances.WaitForInstanceActive(name='wait')
        self.created = {'external_id': 'i-1', 'created_at': 100.0}

    def execute(self, known, current, deadline=None):
        self.cache.lookup.return_value = (known, current)
        deadline = time.time() + 60 if deadline is None else deadline
        return self.task.execute(PROVIDER, self.created, deadline)

    def test_active_returns_the_instance(self):
        result = self.execute(True, instance(driver_base.ACTIVE))
        self.cache.lookup.assert_called_once_with('i-1', 100.0)
        self.cache.wait_change.assert_not_called()
        self.assertEqual('active', result['state'])
        self.assertEqual('192.0.2.10', result['interface_ip'])
        self.assertEqual(100.0, result['created_at'])

    def test_error_fails_at_once(self):
        error = instance(driver_base.ERROR, fault='no valid host')
        e = self.assertRaises(exceptions.InstanceErrorState,
                              self.execute, True, error)
        self.assertIn('no valid host', str(e))

    def test_error_for_quota_or_capacity_is_that_error(self):
        for kind, error_class in (('quota', driver_base.QuotaError),
                                  ('capacity', driver_base.CapacityError)):
            error = instance(driver_base.ERROR, fault=kind, fault_kind=kind)
            self.assertRaises(error_class, self.execute, True, error)

    def test_building_is_still_waiting(self):
        deadline = time.time() + 60
        e = self.assertRaises(exceptions.StillWaiting, self.execute, True,
                              instance(driver_base.BUILDING), deadline)
        self.assertEqual(('i-1', PROVIDER, driver_base.BUILDING),
                         (e.external_id, e.provider, e.seen_state))
        # It waited for one more listing first (two refresh intervals at
        # most), then gave the worker back.
        self.cache.wait_change.assert_called_once_with(
            'i-1', driver_base.BUILDING, 0.1)
        self.assertEqual(2, self.cache.lookup.call_count)
        # One poll waits at most poll_attempt, never past the deadline.
        self.assertLessEqual(e.wake_at, time.time() + 5.0)
        self.assertLessEqual(e.wake_at, deadline)

    def test_backlog_parks_at_once(self):
        self.ctx.worker_backlog = 3
        self.assertRaises(exceptions.StillWaiting, self.execute, True,
                          instance(driver_base.BUILDING))
        self.cache.wait_change.assert_not_called()

    def test_not_listed_yet_is_still_waiting(self):
        e = self.assertRaises(exceptions.StillWaiting, self.execute, False,
                              None)
        self.assertIsNone(e.seen_state)

    def test_wake_at_is_capped_by_the_deadline(self):
        deadline = time.time() + 1
        e = self.assertRaises(exceptions.StillWaiting, self.execute, True,
                              instance(driver_base.BUILDING), deadline)
        self.assertEqual(deadline, e.wake_at)

    def test_after_the_deadline_it_times_out(self):
        self.assertRaises(exceptions.LaunchTimeout, self.execute, True,
                          instance(driver_base.BUILDING), time.time() - 1)
        self.assertRaises(exceptions.LaunchTimeout, self.execute, False,
                          None, time.time() - 1)

    def test_error_wins_over_the_deadline(self):
        self.assertRaises(exceptions.InstanceErrorState, self.execute, True,
                          instance(driver_base.ERROR), time.time() - 1)

    def test_disappeared_instance_fails(self):
        self.assertRaises(driver_base.DriverError, self.execute, True, None)


class TestDeleteInstance(TaskTestCase):

    def setUp(self):
        super().setUp()
        self.task = instances.DeleteInstance(name='delete')

    def test_deletes(self):
        result = self.task.execute(NODE, PROVIDER, 'i-1')
        self.driver.delete_instance.assert_called_once_with('i-1')
        self.assertEqual('i-1', result['external_id'])
        self.assertIn('deleted_at', result)

    def test_not_found_counts_as_deleted(self):
        self.driver.delete_instance.side_effect = driver_base.NotFound('x')
        self.assertIsNone(self.task.execute(NODE, PROVIDER, 'i-1'))

    def test_unknown_id_is_looked_up_by_tag(self):
        self.driver.find_instance.return_value = instance(external_id='i-9')
        result = self.task.execute(NODE, PROVIDER, None)
        self.driver.find_instance.assert_called_once_with(NODE)
        self.driver.delete_instance.assert_called_once_with('i-9')
        self.assertEqual('i-9', result['external_id'])

    def test_unknown_id_and_nothing_tagged(self):
        self.driver.find_instance.return_value = None
        self.assertIsNone(self.task.execute(NODE, PROVIDER, None))
        self.driver.delete_instance.assert_not_called()

    def test_delete_error_propagates(self):
        self.driver.delete_instance.side_effect = driver_base.DriverError(
            'boom')
        self.assertRaises(driver_base.DriverError, self.task.execute, NODE,
                          PROVIDER, 'i-1')


class TestWaitForInstanceGone(TaskTestCase):

    def setUp(self):
        super().setUp()
        self.task = instances.WaitForInstanceGone(name='gone')
        self.deleted = {'external_id': 'i-1', 'deleted_at': 100.0}

    def execute(self, known, current, deadline=None):
        self.cache.lookup.return_value = (known, current)
        deadline = time.time() + 60 if deadline is None else deadline
        return self.task.execute(PROVIDER, self.deleted, deadline)

    def test_nothing_was_deleted(self):
        self.task.execute(PROVIDER, None, time.time())
        self.cache.lookup.assert_not_called()

    def test_gone(self):
        self.assertIsNone(self.execute(True, None))
        self.cache.lookup.assert_called_once_with('i-1', 100.0)

    def test_still_there(self):
        e = self.assertRaises(exceptions.StillWaiting, self.execute, True,
                              instance(driver_base.ACTIVE))
        self.assertEqual(driver_base.ACTIVE, e.seen_state)
        e = self.assertRaises(exceptions.StillWaiting, self.execute, False,
                              None)
        self.assertIsNone(e.seen_state)

    def test_delete_timeout(self):
        self.assertRaises(driver_base.DriverError, self.execute, True,
                          instance(driver_base.ACTIVE), time.time() - 1)


class TestNodeTasks(TaskTestCase):

    def test_mark_building(self):
        nodes.MarkNodeBuilding().execute(NODE)
        self.store.set_node_state.assert_called_once_with(
            NODE, node_states.BUILDING, expected=[node_states.BUILDING],
            launcher='host-1')

    def revert_building(self, *errors, result=None):
        flow_failures = {'atom-%d' % i: failure_of(e)
                         for i, e in enumerate(errors)}
        nodes.MarkNodeBuilding().revert(NODE, result=result,
                                        flow_failures=flow_failures)

    def test_mark_building_revert_fails_the_node(self):
        self.revert_building(exceptions.InstanceErrorState('went to ERROR'))
        self.store.set_node_state.assert_called_once_with(
            NODE, node_states.FAILED, expected=[node_states.BUILDING],
            failure='went to ERROR')

    def test_mark_building_revert_for_quota_or_capacity_aborts(self):
        for error in (driver_base.QuotaError('over quota'),
                      driver_base.CapacityError('no valid host')):
            self.store.reset_mock()
            self.revert_building(error)
            self.store.set_node_state.assert_called_once_with(
                NODE, node_states.ABORTED, expected=[node_states.BUILDING],
                failure=str(error))

    def test_mark_building_revert_after_own_failure(self):
        self.revert_building(
            exceptions.NodeStateConflict('not building'),
            result=failure_of(exceptions.NodeStateConflict('not building')))
        self.store.set_node_state.assert_not_called()

    def test_update_node(self):
        task = nodes.UpdateNodeFromInstance()
        task.execute(NODE, dict(instance().to_dict(), created_at=1.0))
        self.store.update_node.assert_called_once_with(
            NODE, external_id='i-1', interface_ip='192.0.2.10',
            region='r1', az='az1', connection_port=22,
            connection_type='ssh')

    def test_update_node_revert(self):
        task = nodes.UpdateNodeFromInstance()
        task.revert(NODE, result=None)
        fields = dict(self.store.update_node.call_args[1])
        # Only a node still building: not one another run readied.
        self.assertEqual([node_states.BUILDING], fields.pop('expected'))
        self.assertEqual({f: None for f in fields}, fields)
        self.assertIn('external_id', fields)
        self.assertIn('interface_ip', fields)
        self.store.update_node.reset_mock()
        task.revert(NODE, result=failure_of(RuntimeError('x')))
        self.store.update_node.assert_not_called()

    def test_save_host_keys(self):
        task = nodes.SaveHostKeys()
        task.execute(NODE, ['ssh-ed25519 AAAA'])
        self.store.update_node.assert_called_once_with(
            NODE, host_keys=['ssh-ed25519 AAAA'])
        self.store.update_node.reset_mock()
        task.revert(NODE, result=None)
        self.store.update_node.assert_called_once_with(
            NODE, expected=[node_states.BUILDING], host_keys=[])
        self.store.update_node.reset_mock()
        task.revert(NODE, result=failure_of(RuntimeError('x')))
        self.store.update_node.assert_not_called()

    def test_mark_ready(self):
        self.store.get_node.return_value = {'state': node_states.BUILDING,
                                            'external_id': 'i-1'}
        nodes.MarkNodeReady().execute(NODE)
        self.store.set_node_state.assert_called_once_with(
            NODE, node_states.READY, expected=[node_states.BUILDING])

    def test_mark_ready_again_is_a_no_op(self):
        for state in node_states.PAST_READY:
            self.store.get_node.return_value = {'state': state,
                                                'external_id': 'i-1'}
            nodes.MarkNodeReady().execute(NODE)
        self.store.set_node_state.assert_not_called()

    def test_mark_ready_of_an_aborted_node_is_left_to_the_store(self):
        # an aborted node was not made ready by an earlier run: the store
        # refuses the change (only a building node becomes ready)
        self.store.get_node.return_value = {'state': node_states.ABORTED,
                                            'external_id': 'i-1'}
        nodes.MarkNodeReady().execute(NODE)
        self.store.set_node_state.assert_called_once_with(
            NODE, node_states.READY, expected=[node_states.BUILDING])

    def test_mark_deleting(self):
        self.store.find_node.return_value = {'id': NODE,
                                             'external_id': 'i-1'}
        self.assertEqual('i-1', nodes.MarkNodeDeleting().execute(NODE))
        self.store.set_node_state.assert_called_once_with(
            NODE, node_states.DELETING, expected=node_states.DELETE_FLOW)

    def test_mark_deleting_a_gone_node(self):
        self.store.find_node.return_value = None
        self.assertIsNone(nodes.MarkNodeDeleting().execute(NODE))
        self.store.set_node_state.assert_not_called()

    def test_remove_node(self):
        nodes.RemoveNode().execute(NODE)
        self.store.delete_node.assert_called_once_with(NODE)


class TestScanHostKeys(TaskTestCase):

    def setUp(self):
        super().setUp()
        self.task = keyscan.ScanHostKeys(name='scan')
        self.scanner = self.ctx.keyscanner
        self.instance = dict(instance().to_dict(),
                             host_keys=['ssh-ed25519 AAAA'])

    def test_returns_keys(self):
        self.scanner.scan.return_value = ['ssh-ed25519 AAAA']
        keys = self.task.execute(NODE, self.instance, time.time() + 10)
        self.assertEqual(['ssh-ed25519 AAAA'], keys)
        self.scanner.scan.assert_called_once_with(
            '192.0.2.10', 22, 'ssh', expected_keys=['ssh-ed25519 AAAA'],
            exact=False)

    def test_unreachable_is_still_waiting(self):
        self.scanner.scan.side_effect = exceptions.HostUnreachable('refused')
        deadline = time.time() + 10
        e = self.assertRaises(exceptions.StillWaiting, self.task.execute,
                              NODE, self.instance, deadline)
        self.assertLessEqual(e.wake_at, deadline)

    def test_unreachable_after_boot_timeout(self):
        self.scanner.scan.side_effect = exceptions.HostUnreachable('refused')
        e = self.assertRaises(exceptions.KeyscanError, self.task.execute,
                              NODE, self.instance, time.time() - 1)
        self.assertIn('boot-timeout', str(e))

    def test_mismatch_fails_at_once(self):
        self.scanner.scan.side_effect = exceptions.HostKeyMismatch('keys')
        self.assertRaises(exceptions.HostKeyMismatch, self.task.execute,
                          NODE, self.instance, time.time() + 10)


def history(*attempts):
    """A retry history: one (value, {atom: failure}) per attempt."""
    return tf_retry.History([
        (value, {'atom': failure_of(error)} if error else {})
        for value, error in attempts])


class TestLaunchAttempts(base.TestCase):

    def setUp(self):
        super().setUp()
        self.retry = retries.LaunchAttempts(3, name='attempts')

    def test_execute_numbers_attempts(self):
        self.assertEqual(1, self.retry.execute(history()))
        self.assertEqual(2, self.retry.execute(history(
            (1, driver_base.DriverError('x')))))

    def test_rate_limits_are_not_attempts(self):
        self.assertEqual(2, self.retry.execute(history(
            (1, driver_base.RateLimitError('x')),
            (1, driver_base.RateLimitError('x')),
            (1, driver_base.DriverError('x')))))

    def test_quota_or_capacity_reverts_all_at_once(self):
        for error in (driver_base.QuotaError('x'),
                      driver_base.CapacityError('x')):
            self.assertEqual(tf_retry.REVERT_ALL, self.retry.on_failure(
                history((1, error))))

    def test_rate_limit_retries_uncounted(self):
        limited = [(n, driver_base.DriverError('x')) for n in (1, 2, 3)]
        limited.append((4, driver_base.RateLimitError('x')))
        # Even with every attempt spent, a rate limit is tried again.
        self.assertEqual(tf_retry.RETRY,
                         self.retry.on_failure(history(*limited)))

    def test_failures_retry_until_attempts_are_spent(self):
        spent = []
        for n in (1, 2):
            spent.append((n, exceptions.InstanceErrorState('x')))
            self.assertEqual(tf_retry.RETRY,
                             self.retry.on_failure(history(*spent)))
        spent.append((3, exceptions.LaunchTimeout('x')))
        self.assertEqual(tf_retry.REVERT_ALL,
                         self.retry.on_failure(history(*spent)))

    def test_revert_does_nothing(self):
        self.assertIsNone(self.retry.revert(history()))


class TestPollUntilDeadline(base.TestCase):

    def setUp(self):
        super().setUp()
        self.retry = retries.PollUntilDeadline(30, name='poll')

    def test_deadline_is_set_once(self):
        before = time.time()
        deadline = self.retry.execute(history())
        self.assertGreaterEqual(deadline, before + 30)
        self.assertLessEqual(deadline, time.time() + 30)
        later = history((deadline, exceptions.StillWaiting('x', 0)))
        self.assertEqual(deadline, self.retry.execute(later))

    def test_still_waiting_polls_again(self):
        self.assertEqual(tf_retry.RETRY, self.retry.on_failure(history(
            (1, exceptions.StillWaiting('x', 0)))))

    def test_other_failures_revert(self):
        for error in (exceptions.LaunchTimeout('x'),
                      exceptions.InstanceErrorState('x'),
                      driver_base.QuotaError('x'),
                      driver_base.RateLimitError('x')):
            self.assertEqual(tf_retry.REVERT, self.retry.on_failure(
                history((1, error))), error)
