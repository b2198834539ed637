"""The instance cache's waits, and their end when the process stops."""

import threading
from unittest import mock

import fixtures
import testtools

from fleetflow.drivers import base as driver_base
from fleetflow import instance_cache


class TestStopWaits(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.driver = mock.Mock()
        self.driver.list_instances.return_value = [driver_base.Instance(
            external_id='i-1', state=driver_base.BUILDING)]
        self.cache = instance_cache.InstanceCache(
            self.driver, mock.Mock(), interval=1)

    def waiting(self):
        """A thread in wait_change for a change that does not come."""
        thread = threading.Thread(target=self.cache.wait_change,
                                  args=('i-1', driver_base.BUILDING, 60))
        thread.start()
        self.addCleanup(thread.join, 5)
        return thread

    def test_a_wait_ends_when_the_process_stops(self):
        thread = self.waiting()
        self.cache.refresh()
        thread.join(0.2)
        self.assertTrue(thread.is_alive(), 'no change, yet it returned')
        self.cache.stop_waits()
        thread.join(5)
        self.assertFalse(thread.is_alive())
        # Any later wait returns at once.
        thread = self.waiting()
        thread.join(5)
        self.assertFalse(thread.is_alive())

    def test_watches_of_parked_flows_are_left(self):
        fired = []
        self.cache.watch('i-1', driver_base.BUILDING,
                         lambda: fired.append('parked'))
        self.cache.stop_waits()
        self.assertEqual([], fired)
        self.driver.list_instances.return_value = [driver_base.Instance(
            external_id='i-1', state=driver_base.ACTIVE)]
        self.cache.refresh()
        self.assertEqual(['parked'], fired)


class FakeCloud:
    """Instances active ``latency`` seconds after their creation.

    Its clock (``now``, ``time()``) is moved by the test.
    """

    name = 'fake'

    def __init__(self, latency):
        self.now = 1000.0
        self.latency = latency
        self.created = {}
        self.listed_at = []

    def time(self):
        return self.now

    def create(self, external_id):
        self.created[external_id] = self.now
        return self.now

    def list_instances(self):
        self.listed_at.append(self.now)
        return [driver_base.Instance(
            external_id=external_id,
            state=driver_base.ACTIVE if self.now - created >= self.latency
            else driver_base.BUILDING)
            for external_id, created in self.created.items()]


class TestWhenToList(testtools.TestCase):
    """Listings follow what waits: hints learnt, back-off, floor, budget."""

    INTERVAL = 1.0
    FLOOR = 0.1

    def setUp(self):
        super().setUp()
        self.cloud = FakeCloud(latency=5.0)
        self.useFixture(fixtures.MockPatchObject(instance_cache, 'time',
                                                 self.cloud))
        self.planned = []
        scheduler = mock.Mock()
        scheduler.call_at.side_effect = lambda when, callback: \
            self.planned.append((when, callback))
        self.cache = instance_cache.InstanceCache(
            self.cloud, scheduler, self.INTERVAL, self.FLOOR)
        self.active = set()

    def wait_active(self, external_id):
        """A poll: look up the instance, watch it until it is active."""
        since = self.cloud.created[external_id]

        def check():
            known, instance = self.cache.lookup(external_id, since)
            if known and instance is not None and \
                    instance.state == driver_base.ACTIVE:
                self.active.add(external_id)
            else:
                self.cache.watch(external_id, instance_cache.state_of(
                    instance) if known else None, check)

        check()

    def run_until(self, end):
        """Run the planned calls in time order until ``end``."""
        while self.planned:
            self.planned.sort(key=lambda entry: entry[0])
            when, callback = self.planned[0]
            if when > end:
                break
            self.planned.pop(0)
            self.cloud.now = max(self.cloud.now, when)
            callback()
        self.cloud.now = max(self.cloud.now, end)

    def gaps(self, listings):
        return [round(b - a, 3) for a, b in zip(listings, listings[1:])]

    def test_backs_off_to_the_interval_while_nothing_changes(self):
        self.cloud.create('i-1')
        self.wait_active('i-1')
        self.run_until(self.cloud.now + 4.0)
        # The first listing shows i-1 building: no news, it woke nobody.
        self.assertEqual([0.2, 0.4, 0.8, 1.0, 1.0],
                         self.gaps(self.cloud.listed_at)[:5])
        self.assertEqual(set(), self.active)

    def test_a_building_instance_does_not_wake_who_never_saw_it(self):
        self.cloud.create('i-1')
        fired = []
        self.cache.watch('i-1', None, lambda: fired.append('i-1'))
        self.cache.refresh()
        self.assertEqual([], fired)
        self.cloud.now += self.cloud.latency
        self.cache.refresh()
        self.assertEqual(['i-1'], fired)

    def test_a_wait_that_begins_during_a_listing_waits_for_the_next(self):
        self.cloud.create('i-1')
        self.wait_active('i-1')
        fired = []
        list_instances = self.cloud.list_instances

        def list_while_a_wait_begins():
            self.cloud.list_instances = list_instances
            instances = list_instances()
            self.cloud.now += 0.05
            self.cloud.create('i-2')
            self.cache.lookup('i-2', self.cloud.now)
            self.cache.watch('i-2', None, lambda: fired.append('i-2'))
            return instances

        self.cloud.list_instances = list_while_a_wait_begins
        started = self.cloud.now
        self.run_until(started + self.FLOOR / 2)
        # One listing, and it did not answer for i-2, which it predates.
        self.assertEqual([started], self.cloud.listed_at)
        self.assertEqual([], fired)
        self.run_until(started + self.cloud.latency + 2 * self.INTERVAL)
        self.assertEqual(['i-2'], fired)
        self.assertGreaterEqual(min(self.gaps(self.cloud.listed_at)),
                                self.FLOOR - 1e-9)

    def test_a_wait_parked_again_is_learnt_from_its_start(self):
        # A flow in another process: no lookup here, and its timer ends
        # its watch before the change; it is parked again.
        self.cloud.create('i-1')
        fired = []
        watch = self.cache.watch('i-1', None, lambda: fired.append(1))
        self.run_until(self.cloud.now + 3.0)
        watch.cancel()
        self.cache.refresh()   # a listing while it is not watched
        self.cache.watch('i-1', driver_base.BUILDING,
                         lambda: fired.append(2))
        self.run_until(self.cloud.created['i-1'] + 10.0)
        self.assertEqual([2], fired)
        self.assertGreaterEqual(min(self.cache._took[instance_cache.UP]),
                                self.cloud.latency)

    def test_a_long_quiet_wait_costs_few_listings(self):
        # Nothing learnt yet: instances created over 10 s, active after
        # 120 s. Listing every interval would cost about 130 listings.
        self.cloud.latency = 120.0
        start = self.cloud.now
        for index in range(100):
            self.cloud.create('i-%d' % index)
            self.wait_active('i-%d' % index)
            self.run_until(self.cloud.now + 0.1)
        self.run_until(start + 140)
        self.assertEqual(100, len(self.active))
        listed = self.cloud.listed_at
        first_seen = next(at for at in listed if at - start >= 120)
        # The first change is seen at most a quarter of the quiet time
        # late (the listings had shown no change since the first wait).
        self.assertLessEqual(first_seen - start,
                             120 * (1 + instance_cache.QUIET))
        quiet = [at for at in listed if at < first_seen]
        self.assertLess(len(quiet), 25)
        # Once learnt, the others are listed at their hints.
        self.assertLessEqual(listed[-1] - start, 130 + self.INTERVAL)

    def test_a_learnt_change_time_moves_the_hints_of_those_waiting(self):
        self.cloud.create('i-1')
        self.wait_active('i-1')
        self.cloud.now += 2.0
        self.cloud.create('i-2')
        self.wait_active('i-2')
        # i-1 is seen at most a quarter of its quiet wait late.
        self.run_until(self.cloud.created['i-1']
                       + self.cloud.latency * (1 + instance_cache.QUIET))
        self.assertEqual({'i-1'}, self.active)
        learnt = min(self.cache._took[instance_cache.UP])
        # i-2 began to wait before anything was learnt; it is listed
        # when it could be active by what i-1 took, not sooner.
        before = len(self.cloud.listed_at)
        self.run_until(self.cloud.created['i-2'] + learnt + 5.0)
        self.assertEqual({'i-1', 'i-2'}, self.active)
        self.assertEqual([self.cloud.created['i-2'] + learnt],
                         self.cloud.listed_at[before:])

    def test_lists_when_a_waiter_could_be_ready(self):
        self.cloud.create('i-1')
        self.wait_active('i-1')
        self.run_until(self.cloud.now + 10.0)
        self.assertEqual({'i-1'}, self.active)
        # It saw i-1 active at most an interval late: what it learnt.
        learnt = min(self.cache._took[instance_cache.UP])
        self.assertGreaterEqual(learnt, 5.0)
        self.assertLessEqual(learnt, 5.0 + self.INTERVAL)
        # A new instance: nothing is listed until it could be active.
        self.cloud.now += 20
        self.cloud.create('i-2')
        before = len(self.cloud.listed_at)
        self.wait_active('i-2')
        self.run_until(self.cloud.now + learnt)
        self.assertEqual([self.cloud.created['i-2'] + learnt],
                         self.cloud.listed_at[before:])
        self.assertEqual({'i-1', 'i-2'}, self.active)

    def test_never_closer_than_the_floor_and_within_the_budget(self):
        # A new waiter every 10 ms for 20 s: each wants a listing at once.
        start = self.cloud.now
        for index in range(2000):
            self.cloud.create('i-%d' % index)
            self.wait_active('i-%d' % index)
            self.run_until(self.cloud.now + 0.01)
        self.run_until(self.cloud.now + 10)
        listed = self.cloud.listed_at
        self.assertGreaterEqual(min(self.gaps(listed)), self.FLOOR - 1e-9)
        span = listed[-1] - start
        self.assertLessEqual(len(listed), span / self.INTERVAL
                             + instance_cache.BURST + 1)
        self.assertEqual(2000, len(self.active))
