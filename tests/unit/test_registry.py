"""Flows are rebuilt only from fleetflow's registry of flow factories.

The attack: whoever can write the logbook tables plants a flow detail
whose recorded factory is ``os.system``; TaskFlow's loaders would run it
when the launcher resumes its flows and when an admin runs ``flow show``.
These tests plant such rows in a real database (SQLite and PostgreSQL)
and show them refused, logged as SECURITY events, with the other flows
resumed as before.
"""

import contextlib
import os
import uuid

from taskflow.persistence import models as tf_models

from fleetflow import exceptions
from fleetflow.execution import base as exec_base
from fleetflow import flowinfo
from fleetflow.flows import registry
from fleetflow import node_states
from tests import base
from tests import db_urls
from tests.unit import test_cli


def launch_inputs(node):
    return dict(node_id=node['id'], provider=node['provider'],
                pool=node['pool'], label=node['label'], launch_retries=3,
                launch_timeout=60, boot_timeout=10, host_key_checking=False)


def plant(persistence, node_id, name, args=(), kwargs=None, store=None,
          flow_name=None):
    """Write a logbook row and a flow detail naming factory ``name``."""
    detail = tf_models.FlowDetail(flow_name or 'launch-%s' % node_id,
                                  uuid=str(uuid.uuid4()))
    detail.meta = {'factory': {'name': name, 'args': list(args),
                               'kwargs': kwargs or {}}}
    detail.add(exec_base._injector(store if store is not None
                                   else kwargs or {}))
    book = tf_models.LogBook('node-%s' % node_id, uuid=node_id)
    book.add(detail)
    with contextlib.closing(persistence.get_connection()) as conn:
        conn.save_logbook(book)
    return detail


class PlantedFactoryTests:
    """Rows naming another callable than a registered factory."""

    def make_url(self, path):
        return None

    def setUp(self):
        super().setUp()
        state = self.useFixture(base.fixtures.TempDir()).path
        url = self.make_url(state)
        self.ff = self.useFixture(base.FleetflowFixture(
            state_path=state, db_url=url))
        if url:
            # The override is kept by the option group, shared by tests.
            self.addCleanup(self.ff.conf.clear_override, 'connection',
                            'database')
        self.marker = os.path.join(state, 'attacker-was-here')

    def plant_system(self, node_id):
        return plant(self.ff.ctx.persistence, node_id, 'os.system',
                     args=['touch %s' % self.marker])

    def test_resume_all_refuses_a_planted_factory(self):
        victim = self.ff.create_node()
        self.plant_system(victim['id'])
        honest = self.ff.create_node()
        self.ff.runner.record_flow(honest['id'], 'launch',
                                   launch_inputs(honest))
        self.assertEqual(1, self.ff.runner.resume_all())
        self.ff.wait_for(lambda: self.ff.node(honest['id'])['state']
                         == node_states.READY)
        self.assertFalse(os.path.exists(self.marker))
        self.assertIn("SECURITY: [node %s]" % victim['id'],
                      self.logger.output)
        self.assertIn("factory 'os.system' is not a registered flow "
                      "factory", self.logger.output)
        # Nothing lost: the node is as it was, and launched when asked.
        self.assertEqual(node_states.BUILDING,
                         self.ff.node(victim['id'])['state'])
        node, run = self.ff.launch(node=self.ff.node(victim['id']))
        self.assertEqual(node_states.READY, node['state'])

    def test_flow_show_refuses_a_planted_factory(self):
        victim = self.ff.create_node()
        self.plant_system(victim['id'])
        flows = flowinfo.describe_flows(self.ff.ctx, victim['id'])
        self.assertFalse(os.path.exists(self.marker))
        self.assertEqual(1, len(flows))
        self.assertIn('SECURITY', self.logger.output)

    def test_registered_factory_with_bad_inputs_is_refused(self):
        victim = self.ff.create_node()
        other = self.ff.create_node()
        good = launch_inputs(victim)
        name = registry.factory("launch").name
        cases = {
            'input launch_retries of launch: bad value':
                dict(good, launch_retries='3; rm -rf /'),
            "inputs of launch: unknown ['extra']":
                dict(good, extra=1),
            'missing [\'label\']':
                {k: v for k, v in good.items() if k != 'label'},
            'inputs name node %s' % other['id']:
                dict(good, node_id=other['id']),
            'input host_key_checking of launch: bad value':
                dict(good, host_key_checking='yes'),
        }
        for message, kwargs in cases.items():
            detail = plant(self.ff.ctx.persistence, victim['id'], name,
                           kwargs=kwargs)
            error = self.assertRaises(registry.UntrustedFlow,
                                      registry.rebuild, detail,
                                      victim['id'])
            self.assertIn(message, str(error))
        # The flow's store must be the inputs it was recorded with.
        detail = plant(self.ff.ctx.persistence, victim['id'], name,
                       kwargs=good, store=dict(good, provider='elsewhere'))
        error = self.assertRaises(registry.UntrustedFlow, registry.rebuild,
                                  detail, victim['id'])
        self.assertIn('store differs', str(error))
        self.assertEqual(0, self.ff.runner.resume_all())
        self.assertEqual(node_states.BUILDING,
                         self.ff.node(victim['id'])['state'])


class TestPlantedFactorySQLite(PlantedFactoryTests, base.TestCase):
    pass


class TestPlantedFactoryPostgres(PlantedFactoryTests, base.TestCase):

    def make_url(self, path):
        return db_urls.postgres_url(self)


class TestRegistry(base.TestCase):

    def test_only_registered_factories_are_recorded(self):
        ff = self.useFixture(base.FleetflowFixture())
        node = ff.create_node()
        self.assertRaises(registry.UntrustedFlow, ff.runner.record_flow,
                          node['id'], os.system, {'command': 'true'})
        self.assertRaises(registry.UntrustedFlow, ff.runner.record_flow,
                          node['id'], 'launch',
                          dict(launch_inputs(node), launch_timeout=-1))
        self.assertIsNone(ff.node(node['id'])['flow_id'])

    def test_a_row_read_before_the_node_moved_on_records_no_flow(self):
        ff = self.useFixture(base.FleetflowFixture())
        node, run = ff.launch()
        self.assertEqual(node_states.READY, node['state'])
        # The launcher read the row while the launch still ran.
        stale = dict(node, state=node_states.BUILDING)
        for kind in ('launch', 'delete'):
            self.assertRaises(exceptions.NodeStateConflict,
                              ff.runner.record_flow, node['id'], kind,
                              ff.runner.inputs(stale, kind))
        self.assertEqual(run.flow_id, ff.node(node['id'])['flow_id'])
        self.assertEqual(
            [('launch-%s' % node['id'], 'SUCCESS')],
            [(flow['name'], flow['state'])
             for flow in flowinfo.describe_flows(ff.ctx, node['id'])])
        self.assertEqual(node_states.READY, ff.node(node['id'])['state'])

    def test_recorded_flows_are_rebuilt(self):
        ff = self.useFixture(base.FleetflowFixture())
        node = ff.create_node(state=node_states.USED)
        flow, detail, _book = ff.runner.record_flow(
            node['id'], 'delete',
            dict(node_id=node['id'], provider='fake-1', delete_timeout=30))
        self.assertIs(flow, registry.rebuild(detail, node['id']))


class TestFlowShowCommand(test_cli.CliTestCase):

    def test_flow_show_runs_no_planted_factory(self):
        node = self.env.store.create_node('small', 'fake-1', 'main')
        ff = self.useFixture(base.FleetflowFixture(
            layout=self.env.layout_data, state_path=self.env.state_path,
            cloud_path=self.env.cloud_path, runner=False))
        marker = os.path.join(self.env.path, 'attacker-was-here')
        plant(ff.ctx.persistence, node['id'], 'os.system',
              args=['touch %s' % marker])
        rows = self.env.json('flow', 'show', node['id'])
        self.assertEqual('launch-%s' % node['id'], rows[0]['flow'])
        self.assertFalse(os.path.exists(marker))
        self.assertIn('SECURITY', self.logger.output)
