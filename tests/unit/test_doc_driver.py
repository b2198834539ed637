"""The driver author's guide's worked example, run by fleetflow's flows.

``doc/source/contributor/toy_driver.py`` is loaded as a driver named
``toy`` and nodes are launched and deleted through it with the real
launch and delete flows, so the example cannot drift from the contract.
"""

import importlib.util
import os

import fixtures

from fleetflow import drivers
from fleetflow import node_states
from tests import base

PATH = os.path.join(os.path.dirname(__file__), '..', '..', 'doc', 'source',
                    'contributor', 'toy_driver.py')


def load_example():
    spec = importlib.util.spec_from_file_location('toy_driver', PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestToyDriver(base.TestCase):

    def setUp(self):
        super().setUp()
        self.toy = load_example()
        registered = drivers.get_driver_class

        def get_driver_class(name):
            return self.toy.ToyDriver if name == 'toy' else \
                registered(name)

        self.useFixture(fixtures.MonkeyPatch(
            'fleetflow.drivers.get_driver_class', get_driver_class))
        self.ff = self.useFixture(base.FleetflowFixture(layout={
            'labels': [{'name': base.LABEL}],
            'providers': [{
                'name': 'toy-1', 'driver': 'toy', 'boot-seconds': 0.2,
                'max-instances': 1,
                'pools': [{'name': base.POOL, 'host-key-checking': False,
                           'labels': [{'name': base.LABEL,
                                       'cores': 2}]}]}]}))

    def test_launch_and_delete(self):
        node, run = self.ff.launch()
        self.assertEqual('SUCCESS', run.state)
        self.assertEqual(node_states.READY, node['state'])
        self.assertEqual('127.0.0.1', node['interface_ip'])
        instance, = self.ff.instances()
        self.assertEqual(node['external_id'], instance.external_id)
        self.assertEqual(node['id'], instance.node_id)
        self.ff.store.set_node_state(node['id'], node_states.USED)
        self.ff.delete(self.ff.node(node['id']))
        self.assertIsNone(self.ff.node(node['id']))
        self.assertEqual({}, self.toy.CLOUD)

    def test_quota_error_aborts_the_node(self):
        self.ff.launch()
        node, run = self.ff.launch()
        self.assertEqual(node_states.ABORTED, node['state'])
        self.assertEqual(1, len(self.ff.instances()))

    def test_quota_for_label(self):
        pool = self.ff.provider.pool(base.POOL)
        self.assertEqual(2, self.ff.driver.get_quota_for_label(
            pool, pool['labels'][0]).cores)
