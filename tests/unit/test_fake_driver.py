"""The fake cloud: latencies, quota, faults and state on disk."""

import os
import subprocess
import sys
import tempfile
import time

import testtools

from fleetflow.drivers import base
from fleetflow.drivers import fake
from tests import base as test_base

LABEL = {'name': 'small', 'cores': 2, 'ram': 1024}
POOL = {'name': 'main'}


class TestFakeDriver(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp()
        self.conf = test_base.make_conf(self.tmp)

    def driver(self, **options):
        provider = {'name': 'fake-1', 'driver': 'fake',
                    'state-path': os.path.join(self.tmp, 'cloud.sqlite')}
        provider.update(options)
        return fake.FakeDriver(provider, self.conf)

    def create(self, driver, node_id='n1'):
        return driver.create_instance(
            node_id, POOL, LABEL, {base.META_NODE_ID: node_id,
                                   base.META_PROVIDER: driver.name})

    def test_building_then_active_after_create_latency(self):
        driver = self.driver(**{'create-latency': 0.3})
        instance = self.create(driver)
        self.assertEqual(base.BUILDING, instance.state)
        self.assertEqual('n1', instance.node_id)
        time.sleep(0.35)
        active = test_base.listed(driver, instance.external_id)
        self.assertEqual(base.ACTIVE, active.state)
        self.assertIsNotNone(active.interface_ip)

    def test_delete_takes_delete_latency(self):
        driver = self.driver(**{'delete-latency': 0.3})
        instance = self.create(driver)
        driver.delete_instance(instance.external_id)
        self.assertEqual([instance.external_id],
                         [i.external_id for i in driver.list_instances()])
        time.sleep(0.35)
        self.assertEqual([], driver.list_instances())
        self.assertIsNone(test_base.listed(driver, instance.external_id))
        self.assertRaises(base.NotFound, driver.delete_instance,
                          instance.external_id)

    def test_quota_is_enforced(self):
        driver = self.driver(quota={'instances': 5, 'cores': 4})
        self.create(driver, 'a')
        self.create(driver, 'b')
        error = self.assertRaises(base.QuotaError, self.create, driver, 'c')
        self.assertIn('cores', str(error))
        self.assertEqual(base.Quota(instances=5, cores=4),
                         driver.get_quota_limits())
        self.assertEqual(base.Quota(instances=1, cores=2, ram=1024),
                         driver.get_quota_for_label(POOL, LABEL))

    def test_create_error(self):
        driver = self.driver(faults={'create-error': 1})
        self.assertRaises(base.DriverError, self.create, driver)
        self.assertEqual([], driver.list_instances())

    def test_instance_error(self):
        driver = self.driver(faults={'instance-error': 1})
        instance = self.create(driver)
        errored = test_base.listed(driver, instance.external_id)
        self.assertEqual(base.ERROR, errored.state)
        self.assertTrue(errored.fault)
        self.assertIsNone(errored.fault_kind)

    def test_capacity_error(self):
        driver = self.driver(faults={'capacity-error': 1})
        instance = self.create(driver)
        errored = test_base.listed(driver, instance.external_id)
        self.assertEqual((base.ERROR, 'capacity'),
                         (errored.state, errored.fault_kind))
        self.assertIn('no valid host', errored.fault)

    def test_quota_error(self):
        driver = self.driver(faults={'quota-error': 1})
        self.assertRaises(base.QuotaError, self.create, driver)

    def test_rate_limit_gives_retry_time(self):
        driver = self.driver(faults={'rate-limit': 1},
                             **{'rate-limit-delay': 2})
        before = time.time()
        error = self.assertRaises(base.RateLimitError, self.create, driver)
        self.assertGreaterEqual(error.retry_at, before + 2)

    def test_delete_error(self):
        driver = self.driver(faults={'delete-error': 1})
        instance = self.create(driver)
        self.assertRaises(base.DriverError, driver.delete_instance,
                          instance.external_id)
        self.assertEqual(1, len(driver.list_instances()))

    def test_fault_rate_is_a_rate(self):
        driver = self.driver(faults={'create-error': 0.5})
        failures = 0
        for number in range(200):
            try:
                self.create(driver, str(number))
            except base.DriverError:
                failures += 1
        self.assertTrue(50 < failures < 150, failures)

    def test_calls_are_counted(self):
        driver = self.driver()
        instance = self.create(driver)
        driver.list_instances()
        driver.delete_instance(instance.external_id)
        self.assertEqual({'create': 1, 'list': 1, 'delete': 1},
                         driver.call_counts())

    def test_failed_calls_are_counted(self):
        driver = self.driver(faults={'create-error': 1, 'delete-error': 1})
        self.assertRaises(base.DriverError, self.create, driver)
        self.assertRaises(base.NotFound, driver.delete_instance, 'fake-none')
        self.assertEqual({'create': 1, 'list': 0, 'delete': 1},
                         driver.call_counts())

    def test_injected_faults_are_counted_by_kind(self):
        driver = self.driver(faults={'create-error': 1})
        self.assertRaises(base.DriverError, self.create, driver)
        driver = self.driver(faults={'instance-error': 1,
                                     'delete-error': 1})
        instance = self.create(driver, 'n2')
        self.assertRaises(base.DriverError, driver.delete_instance,
                          instance.external_id)
        counts = dict.fromkeys(fake.FAULTS, 0)
        counts.update({'create-error': 1, 'instance-error': 1,
                       'delete-error': 1})
        self.assertEqual(counts, driver.fault_counts())
        # Faults are not calls.
        self.assertEqual({'create': 2, 'list': 0, 'delete': 1},
                         driver.call_counts())

    def test_history_keeps_deleted_instances_out_of_listings(self):
        driver = self.driver()
        gone = [self.create(driver, 'old-%d' % n).external_id
                for n in range(3)]
        for external_id in gone:
            driver.delete_instance(external_id)
        live = self.create(driver, 'new').external_id
        self.assertEqual([live], [i.external_id
                                  for i in driver.list_instances()])
        self.assertIsNone(test_base.listed(driver, gone[0]))
        history = driver.instance_history()
        self.assertEqual(gone + [live], [r['external_id'] for r in history])
        self.assertEqual([False] * 3 + [True],
                         [r['gone_at'] is None for r in history])

    def test_listed_metadata_is_each_instances_own(self):
        driver = self.driver()
        made = {name: self.create(driver, name).external_id
                for name in ('a', 'b')}
        for _ in range(2):
            listed = {i.external_id: i.metadata[base.META_NODE_ID]
                      for i in driver.list_instances()}
            self.assertEqual({made['a']: 'a', made['b']: 'b'}, listed)

    def test_state_survives_a_new_process(self):
        driver = self.driver()
        instance = self.create(driver)
        script = (
            'import sys; from fleetflow.drivers import fake; '
            'from tests import base; '
            'd = fake.FakeDriver({"name": "fake-1", "state-path": '
            'sys.argv[1]}, base.make_conf(sys.argv[2])); '
            'print(",".join(i.external_id for i in d.list_instances())); '
            'd.create_instance("n2", {}, {}, {})')
        out = subprocess.run(
            [sys.executable, '-c', script,
             os.path.join(self.tmp, 'cloud.sqlite'), self.tmp],
            check=True, capture_output=True, text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                os.path.abspath(__file__))))).stdout
        self.assertEqual(instance.external_id, out.strip())
        self.assertEqual(2, len(driver.list_instances()))
