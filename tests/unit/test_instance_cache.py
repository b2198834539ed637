"""The instance cache's waits, and their end when the process stops."""

import threading
from unittest import mock

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
