"""The scheduler's one thread: periodic jobs and timers."""

import threading
import time

from fleetflow import scheduler as ff_scheduler
from tests import base


class TestScheduler(base.TestCase):

    def setUp(self):
        super().setUp()
        self.scheduler = ff_scheduler.Scheduler()
        self.calls = []
        self.called = threading.Event()

    def start(self):
        self.scheduler.start()
        self.addCleanup(self.scheduler.stop)

    def record(self, name):
        def call():
            self.calls.append((name, time.time()))
            self.called.set()
        return call

    def times(self, name):
        return [at for called, at in self.calls if called == name]

    def test_a_periodic_job_runs_again_and_again(self):
        self.scheduler.add_periodic(self.record('tick'), 0.05)
        started = time.time()
        self.start()
        base.FleetflowFixture.wait_for(lambda: len(self.times('tick')) >= 3)
        first = self.times('tick')[0]
        self.assertGreaterEqual(first - started, 0.04)

    def test_run_immediately(self):
        started = time.time()
        self.scheduler.add_periodic(self.record('now'), 30,
                                    run_immediately=True)
        self.start()
        self.assertTrue(self.called.wait(5))
        self.assertLess(self.times('now')[0] - started, 5)

    def test_timers_fire_in_order_of_when(self):
        now = time.time()
        self.start()
        for name, delay in (('late', 0.3), ('soon', 0.1), ('past', -1)):
            self.scheduler.call_at(now + delay, self.record(name))
        base.FleetflowFixture.wait_for(lambda: len(self.calls) == 3)
        self.assertEqual(['past', 'soon', 'late'],
                         [name for name, _at in self.calls])
        self.assertGreaterEqual(self.times('late')[0], now + 0.3)

    def test_an_earlier_timer_wakes_the_sleeping_thread(self):
        self.scheduler.call_at(time.time() + 60, self.record('later'))
        self.start()
        self.scheduler.call_at(time.time(), self.record('now'))
        self.assertTrue(self.called.wait(5))
        self.assertEqual(['now'], [name for name, _at in self.calls])

    def test_a_failing_job_is_logged_and_runs_again(self):
        failures = []

        def fail():
            failures.append(time.time())
            raise RuntimeError('boom')

        self.scheduler.add_periodic(fail, 0.02)
        self.start()
        base.FleetflowFixture.wait_for(lambda: len(failures) >= 2)
        self.assertIn('boom', self.logger.output)

    def test_stop_ends_the_thread_and_no_call_follows(self):
        self.scheduler.add_periodic(self.record('tick'), 0.01)
        self.scheduler.start()
        base.FleetflowFixture.wait_for(lambda: self.calls)
        self.scheduler.stop()
        self.assertFalse(self.scheduler._thread.is_alive())
        count = len(self.calls)
        time.sleep(0.05)
        self.assertEqual(count, len(self.calls))
