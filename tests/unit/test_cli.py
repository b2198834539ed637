"""The admin CLI and fleetflow-manage, run in-process with real arguments.

Each test writes a config file and a layout with the fake driver, sets up
a SQLite database with ``fleetflow-manage db sync`` and runs commands as
a user types them, parsing their ``-f json`` output. What the launcher
would do is done from the test through the store (a launcher process is
used by the functional tests).
"""

import collections
import contextlib
import io
import json
import os
import threading
import time

import fixtures
import yaml

from fleetflow.cmd import cli
from fleetflow.cmd import common
from fleetflow.cmd import manage
from fleetflow.db import api as db_api
from fleetflow.db import models
from fleetflow.drivers import base as driver_base
from fleetflow import node_states
from tests import base

Result = collections.namedtuple('Result', 'rc stdout stderr')

NODE_SHOW_FIELDS = ['id', 'label', 'provider', 'pool', 'state',
                    'external_id', 'interface_ip', 'connection_port',
                    'username', 'host_keys', 'launch_attempts',
                    'request_id', 'created_at', 'state_time', 'ready_at']
REQUEST_SHOW_FIELDS = ['id', 'state', 'labels', 'nodes', 'reason',
                       'created_at']


def is_iso_utc(text):
    return time.strptime(text, '%Y-%m-%dT%H:%M:%SZ') is not None


class CliEnv(fixtures.Fixture):
    """A config file, a fake-driver layout and (by default) a synced DB.

    The fake provider is ``fake-1`` (quota: 10 instances) with pool
    ``main`` serving labels ``small`` and ``large``. ``run`` runs the
    commands in this process; the functional tests override it to run
    the console scripts.
    """

    def __init__(self, layout=None, min_ready=0, conf=None, sync=True,
                 **provider_args):
        super().__init__()
        self.layout_data = layout
        self.min_ready = min_ready
        self.extra_conf = conf or {}
        self.sync = sync
        self.provider_args = dict({'quota': {'instances': 10}},
                                  **provider_args)

    def _setUp(self):
        self.path = self.useFixture(fixtures.TempDir()).path
        self.state_path = os.path.join(self.path, 'state')
        self.cloud_path = os.path.join(self.state_path, 'fake-cloud.sqlite')
        self.layout_path = os.path.join(self.path, 'layout.yaml')
        self.conf_path = os.path.join(self.path, 'fleetflow.conf')
        if self.layout_data is None:
            self.layout_data = {
                'labels': [{'name': 'small', 'min-ready': self.min_ready},
                           {'name': 'large'}],
                'providers': [base.fake_provider(
                    cloud_path=self.cloud_path, labels=('small', 'large'),
                    **self.provider_args)]}
        self.write_layout(self.layout_data)
        options = {
            'DEFAULT': {'state_path': self.state_path,
                        'host': 'test-host'},
            'launcher': {'layout_file': self.layout_path,
                         'request_interval': 0.1,
                         'instance_refresh_interval': 0.05,
                         'poll_attempt': 0.2,
                         'cleanup_interval': 3600},
        }
        for section, values in self.extra_conf.items():
            options.setdefault(section, {}).update(values)
        self.write_conf(options)
        if self.sync:
            result = self.manage('db', 'sync')
            assert result.rc == 0, result
        self._store = None

    def write_layout(self, data, path=None):
        with open(path or self.layout_path, 'w') as f:
            yaml.safe_dump(data, f)

    def write_conf(self, options, path=None):
        with open(path or self.conf_path, 'w') as f:
            for section, values in options.items():
                f.write('[%s]\n' % section)
                for key, value in values.items():
                    f.write('%s = %s\n' % (key, value))

    @property
    def store(self):
        """A store on the same database, to play the launcher's part."""
        if self._store is None:
            engine = db_api.create_engine(
                'sqlite:///%s' % os.path.join(self.state_path,
                                              'fleetflow.sqlite'))
            self.addCleanup(engine.dispose)
            self._store = db_api.Store(engine)
        return self._store

    def run(self, app_class, args, conf_path=None):
        stdout, stderr = io.StringIO(), io.StringIO()
        app = app_class(stdin=io.StringIO(), stdout=stdout, stderr=stderr)
        try:
            # argparse writes its usage errors to sys.stderr.
            with contextlib.redirect_stderr(stderr):
                rc = app.run(['--config-file', conf_path or self.conf_path]
                             + list(args))
        except SystemExit as e:
            rc = e.code
        return Result(rc, stdout.getvalue(), stderr.getvalue())

    def cli(self, *args, conf_path=None):
        return self.run(cli.FleetflowApp, args, conf_path)

    def manage(self, *args, conf_path=None):
        return self.run(manage.ManageApp, args, conf_path)

    def json(self, *args):
        """Run a CLI command with ``-f json``; its parsed output."""
        result = self.cli(*(args + ('-f', 'json')))
        if result.rc != 0:
            raise AssertionError('%s failed: %r' % (' '.join(args), result))
        return json.loads(result.stdout)


class CliTestCase(base.TestCase):

    def setUp(self):
        super().setUp()
        self.env = self.useFixture(CliEnv())

    def assertFails(self, result, message):
        """Exit 1, ``message`` in the error, and no traceback."""
        self.assertEqual(1, result.rc, result)
        self.assertIn(message, result.stderr)
        self.assertNotIn('Traceback', result.stderr)

    def ready_node(self, label='small', request_id=None, **fields):
        store = self.env.store
        node = store.create_node(label, base.PROVIDER, base.POOL,
                                 request_id=request_id)
        values = dict(external_id='fake-1234', interface_ip='192.0.2.7',
                      username='zuul', host_keys=['ssh-ed25519 AAAAC3'])
        values.update(fields)
        store.set_node_state(node['id'], node_states.READY, **values)
        return store.get_node(node['id'])

    def later(self, delay, function, *args, **kwargs):
        timer = threading.Timer(delay, function, args, kwargs)
        timer.start()
        self.addCleanup(timer.join)
        self.addCleanup(timer.cancel)

    def fulfil(self, request_id, labels):
        store = self.env.store
        store.set_request_state(request_id, models.PENDING)
        for label in labels:
            node = self.ready_node(label, request_id=request_id)
            store.set_node_state(node['id'], node_states.IN_USE)
        store.set_request_state(request_id, models.FULFILLED)


class TestManage(CliTestCase):

    def test_db_sync_and_version(self):
        version = json.loads(self.env.manage('db', 'version', '-f',
                                             'json').stdout)
        self.assertEqual(manage.head_revision(), version['current'])
        self.assertTrue(version['up_to_date'])
        again = self.env.manage('db', 'sync')
        self.assertEqual(0, again.rc)
        self.assertIn('is at revision %s' % manage.head_revision(),
                      again.stdout)

    def test_db_sync_new_database(self):
        env = self.useFixture(CliEnv(sync=False))
        os.makedirs(env.state_path)
        version = json.loads(env.manage('db', 'version', '-f',
                                        'json').stdout)
        self.assertIsNone(version['current'])
        self.assertFalse(version['up_to_date'])
        result = env.manage('db', 'sync')
        self.assertEqual(0, result.rc, result)
        self.assertIn('upgraded from revision (empty) to %s'
                      % manage.head_revision(), result.stdout)
        # fleetflow's tables and TaskFlow's logbook tables are there.
        self.assertEqual([], env.json('node', 'list'))
        import sqlalchemy as sa
        tables = sa.inspect(env.store.engine).get_table_names()
        self.assertIn('fleetflow_nodes', tables)
        self.assertIn('logbooks', tables)
        self.assertIn('flowdetails', tables)

    def test_commands_before_db_sync(self):
        env = self.useFixture(CliEnv(sync=False))
        os.makedirs(env.state_path)
        result = env.cli('node', 'list')
        self.assertFails(result, 'run "fleetflow-manage db sync"')


class TestNodeCommands(CliTestCase):

    def test_node_list(self):
        self.assertEqual([], self.env.json('node', 'list'))
        ready = self.ready_node()
        building = self.env.store.create_node('large', base.PROVIDER,
                                              base.POOL)
        nodes = self.env.json('node', 'list')
        self.assertEqual([ready['id'], building['id']],
                         [n['id'] for n in nodes])
        self.assertEqual({'id': ready['id'], 'label': 'small',
                          'provider': base.PROVIDER, 'pool': base.POOL,
                          'state': 'ready', 'external_id': 'fake-1234',
                          'interface_ip': '192.0.2.7', 'request_id': None},
                         {k: v for k, v in nodes[0].items()
                          if k != 'state_time'})
        self.assertTrue(is_iso_utc(nodes[0]['state_time']))

    def test_node_list_filters(self):
        ready = self.ready_node()
        building = self.env.store.create_node('large', base.PROVIDER,
                                              base.POOL)
        ids = lambda *args: [n['id'] for n in self.env.json(  # noqa: E731
            'node', 'list', *args)]
        self.assertEqual([ready['id']], ids('--state', 'ready'))
        self.assertEqual([ready['id'], building['id']],
                         ids('--state', 'ready', '--state', 'building'))
        self.assertEqual([building['id']], ids('--label', 'large'))
        self.assertEqual([], ids('--provider', 'elsewhere'))
        self.assertEqual([ready['id'], building['id']],
                         ids('--provider', base.PROVIDER))

    def test_node_list_bad_state(self):
        result = self.env.cli('node', 'list', '--state', 'sleeping')
        self.assertEqual(2, result.rc)
        self.assertIn("invalid choice: 'sleeping'", result.stderr)

    def test_node_list_formats(self):
        node = self.ready_node()
        for fmt in ('table', 'csv', 'value', 'yaml'):
            result = self.env.cli('node', 'list', '-f', fmt)
            self.assertEqual(0, result.rc, result)
            self.assertIn(node['id'], result.stdout)
        listed = yaml.safe_load(self.env.cli('node', 'list', '-f',
                                             'yaml').stdout)
        self.assertEqual(node['id'], listed[0]['id'])

    def test_node_show(self):
        node = self.ready_node(connection_port=2022)
        shown = self.env.json('node', 'show', node['id'])
        self.assertEqual(NODE_SHOW_FIELDS,
                         list(shown)[:len(NODE_SHOW_FIELDS)])
        self.assertEqual(node['id'], shown['id'])
        self.assertEqual('ready', shown['state'])
        self.assertEqual('fake-1234', shown['external_id'])
        self.assertEqual('192.0.2.7', shown['interface_ip'])
        self.assertEqual(2022, shown['connection_port'])
        self.assertEqual('zuul', shown['username'])
        self.assertEqual(['ssh-ed25519 AAAAC3'], shown['host_keys'])
        self.assertEqual(0, shown['launch_attempts'])
        self.assertIsNone(shown['request_id'])
        for field in ('created_at', 'state_time', 'ready_at'):
            self.assertTrue(is_iso_utc(shown[field]), shown[field])
        self.assertEqual(
            time.strftime('%Y-%m-%dT%H:%M:%SZ',
                          time.gmtime(node['created_at'])),
            shown['created_at'])

    def test_node_show_table(self):
        node = self.ready_node()
        result = self.env.cli('node', 'show', node['id'])
        self.assertEqual(0, result.rc)
        self.assertIn('| state           | ready', result.stdout)

    def test_node_show_unknown(self):
        self.assertFails(self.env.cli('node', 'show', 'nope'),
                         'error: node nope not found')

    def test_node_delete(self):
        node = self.ready_node()
        self.assertEqual({'id': node['id'], 'state': 'used'},
                         self.env.json('node', 'delete', node['id']))
        self.assertEqual('used', self.env.store.get_node(node['id'])['state'])

    def test_node_delete_wait(self):
        node = self.ready_node()
        self.later(0.3, self.env.store.delete_node, node['id'])
        self.assertEqual({'id': node['id'], 'state': 'deleted'},
                         self.env.json('node', 'delete', node['id'],
                                       '--wait', '--timeout', '10'))

    def test_node_delete_wait_timeout(self):
        node = self.ready_node()
        result = self.env.cli('node', 'delete', node['id'], '--wait',
                              '--timeout', '0.3', '-f', 'json')
        self.assertFails(result, 'node %s is still used after 0.3s'
                         % node['id'])
        self.assertEqual({'id': node['id'], 'state': 'used'},
                         json.loads(result.stdout))

    def test_node_delete_held_refused(self):
        node = self.ready_node()
        self.env.json('node', 'hold', node['id'], '--reason', 'debug')
        self.assertFails(self.env.cli('node', 'delete', node['id']),
                         'held (debug); release it first')
        self.assertEqual('hold', self.env.store.get_node(node['id'])['state'])

    def test_node_delete_unknown(self):
        self.assertFails(self.env.cli('node', 'delete', 'nope'),
                         'node nope not found')

    def test_node_hold(self):
        node = self.ready_node()
        before = time.time()
        held = self.env.json('node', 'hold', node['id'], '--reason',
                             'look at the logs', '--expires', '7200')
        self.assertEqual('hold', held['state'])
        self.assertEqual('look at the logs', held['hold_reason'])
        expires = self.env.store.get_node(node['id'])['hold_expires']
        self.assertGreaterEqual(expires, before + 7200)
        self.assertEqual(time.strftime('%Y-%m-%dT%H:%M:%SZ',
                                       time.gmtime(expires)),
                         held['hold_expires'])

    def test_node_hold_without_expiry(self):
        node = self.ready_node()
        held = self.env.json('node', 'hold', node['id'])
        self.assertEqual('hold', held['state'])
        self.assertIsNone(held['hold_expires'])

    def test_node_hold_refused(self):
        node = self.env.store.create_node('small', base.PROVIDER, base.POOL,
                                          state=node_states.DELETING)
        self.assertFails(self.env.cli('node', 'hold', node['id']),
                         'is deleting; only a node that is ready, in-use, '
                         'used can be held')

    def test_node_release(self):
        node = self.ready_node()
        self.env.json('node', 'hold', node['id'])
        released = self.env.json('node', 'release', node['id'])
        self.assertEqual('used', released['state'])
        self.assertFails(self.env.cli('node', 'release', node['id']),
                         'is not held (it is used)')


class TestRequestCommands(CliTestCase):

    def test_request_create(self):
        request = self.env.json('request', 'create', 'small', 'large',
                                '--priority', '50')
        self.assertEqual('requested', request['state'])
        self.assertEqual(['small', 'large'], request['labels'])
        self.assertEqual([], request['nodes'])
        self.assertEqual(50, request['priority'])
        self.assertEqual('fleetflow-cli', request['requestor'])
        self.assertTrue(is_iso_utc(request['created_at']))
        stored = self.env.store.get_request(request['id'])
        self.assertEqual(['small', 'large'], stored['labels'])
        self.assertEqual(50, stored['priority'])

    def test_request_create_needs_labels(self):
        result = self.env.cli('request', 'create')
        self.assertEqual(2, result.rc)
        self.assertIn('the following arguments are required: LABEL',
                      result.stderr)

    def test_request_create_wait_fulfilled(self):
        self._serve_first_request(
            lambda request: self.fulfil(request['id'], request['labels']))
        request = self.env.json('request', 'create', 'small', 'small',
                                '--wait', '--timeout', '10')
        self.assertEqual('fulfilled', request['state'])
        self.assertEqual(2, len(request['nodes']))
        nodes = self.env.store.list_nodes(request_id=request['id'])
        self.assertEqual(sorted(n['id'] for n in nodes),
                         sorted(request['nodes']))

    def _serve_first_request(self, function):
        """Call ``function(request)`` once a request shows up."""
        def watch():
            deadline = time.time() + 10
            while time.time() < deadline:
                requests = self.env.store.list_requests()
                if requests:
                    return function(requests[0])
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        self.addCleanup(watcher.join)

    def test_request_create_wait_failed(self):
        self._serve_first_request(lambda request: self.env.store
                                  .set_request_state(
                                      request['id'], models.REQUEST_FAILED,
                                      reason='unknown label(s): gpu'))
        result = self.env.cli('request', 'create', 'gpu', '--wait',
                              '--timeout', '10', '-f', 'json')
        self.assertFails(result, 'failed: unknown label(s): gpu')
        request = json.loads(result.stdout)
        self.assertEqual('failed', request['state'])
        self.assertEqual('unknown label(s): gpu', request['reason'])

    def test_request_create_wait_timeout(self):
        result = self.env.cli('request', 'create', 'small', '--wait',
                              '--timeout', '0.3', '-f', 'json')
        request = json.loads(result.stdout)
        self.assertFails(result, 'request %s is still requested after 0.3s'
                         % request['id'])
        self.assertIn('release it with "request release %s"'
                      % request['id'], result.stderr)
        self.assertEqual('requested', request['state'])

    def test_request_list(self):
        self.assertEqual([], self.env.json('request', 'list'))
        low = self.env.json('request', 'create', 'small', '--priority',
                            '300')
        high = self.env.json('request', 'create', 'large', '--priority',
                             '5')
        done = self.env.json('request', 'create', 'small')
        self.fulfil(done['id'], ['small'])
        listed = self.env.json('request', 'list')
        self.assertEqual([high['id'], done['id'], low['id']],
                         [r['id'] for r in listed])
        self.assertEqual(['id', 'state', 'priority', 'labels', 'nodes',
                          'requestor', 'reason', 'created_at'],
                         list(listed[0]))
        self.assertEqual(1, len(listed[1]['nodes']))
        self.assertEqual([done['id']],
                         [r['id'] for r in self.env.json(
                             'request', 'list', '--state', 'fulfilled')])

    def test_request_show(self):
        request = self.env.json('request', 'create', 'small', 'large')
        self.fulfil(request['id'], ['small', 'large'])
        shown = self.env.json('request', 'show', request['id'])
        self.assertEqual(REQUEST_SHOW_FIELDS,
                         list(shown)[:len(REQUEST_SHOW_FIELDS)])
        self.assertEqual('fulfilled', shown['state'])
        self.assertEqual(['small', 'large'], shown['labels'])
        self.assertEqual(2, len(shown['nodes']))
        self.assertIsNone(shown['reason'])
        self.assertTrue(is_iso_utc(shown['created_at']))

    def test_request_show_unknown(self):
        self.assertFails(self.env.cli('request', 'show', 'nope'),
                         'error: request nope not found')

    def test_request_release(self):
        request = self.env.json('request', 'create', 'small')
        self.fulfil(request['id'], ['small'])
        node_id = self.env.json('request', 'show', request['id'])['nodes'][0]
        result = self.env.cli('request', 'release', request['id'])
        self.assertEqual(0, result.rc, result)
        self.assertEqual('request %s released; nodes handed back: %s\n'
                         % (request['id'], node_id), result.stdout)
        self.assertEqual('used', self.env.store.get_node(node_id)['state'])
        self.assertFails(self.env.cli('request', 'show', request['id']),
                         'not found')

    def test_request_release_unknown(self):
        self.assertFails(self.env.cli('request', 'release', 'nope'),
                         'request nope not found')


class TestFleetCommands(CliTestCase):
    """Commands that need the layout: flows, instances, labels..."""

    def flow_fixture(self):
        """A runner on the CLI's database and fake cloud."""
        return self.useFixture(base.FleetflowFixture(
            layout=self.env.layout_data, state_path=self.env.state_path,
            cloud_path=self.env.cloud_path))

    def test_flow_show(self):
        ff = self.flow_fixture()
        node, run = ff.launch(label='small')
        self.assertEqual('ready', node['state'])
        rows = self.env.json('flow', 'show', node['id'])
        self.assertEqual(['flow', 'atom', 'kind', 'state', 'attempts',
                          'duration', 'failure'], list(rows[0]))
        flow = rows[0]
        self.assertEqual('flow', flow['kind'])
        self.assertEqual('SUCCESS', flow['state'])
        self.assertIn(node['id'], flow['flow'])
        atoms = {row['atom']: row for row in rows[1:]}
        self.assertEqual('task', atoms['create-instance']['kind'])
        self.assertEqual('SUCCESS', atoms['create-instance']['state'])
        self.assertEqual(1, atoms['create-instance']['attempts'])
        self.assertIn('retry', {row['kind'] for row in rows[1:]})
        self.assertIsInstance(flow['duration'], float)
        for row in rows:
            self.assertIsNone(row['failure'])

    def test_flow_show_node_without_flows(self):
        node = self.ready_node()
        self.assertEqual([], self.env.json('flow', 'show', node['id']))

    def test_flow_show_unknown_node(self):
        self.assertFails(self.env.cli('flow', 'show', 'nope'),
                         'node nope not found')

    def test_instance_list(self):
        ff = self.flow_fixture()
        node, _run = ff.launch(label='small')
        leak = ff.driver.create_instance(
            'gone-node', {}, {'name': 'small'},
            {driver_base.META_NODE_ID: 'gone-node',
             driver_base.META_PROVIDER: base.PROVIDER,
             driver_base.META_POOL: base.POOL})
        foreign = ff.driver.create_instance('x', {}, {'name': 'small'}, {})
        rows = {row['external_id']: row for row in self.env.json(
            'instance', 'list', '--provider', base.PROVIDER)}
        self.assertEqual({node['external_id'], leak.external_id,
                          foreign.external_id}, set(rows))
        self.assertEqual({'provider': base.PROVIDER,
                          'external_id': node['external_id'],
                          'node_id': node['id'], 'state': 'active',
                          'known': True, 'node_state': 'ready',
                          'leaked': False}, rows[node['external_id']])
        self.assertEqual('gone-node', rows[leak.external_id]['node_id'])
        self.assertFalse(rows[leak.external_id]['known'])
        self.assertTrue(rows[leak.external_id]['leaked'])
        self.assertFalse(rows[foreign.external_id]['known'])
        self.assertFalse(rows[foreign.external_id]['leaked'])
        self.assertEqual(3, len(self.env.json('instance', 'list')))

    def test_instance_list_unknown_provider(self):
        self.assertFails(self.env.cli('instance', 'list', '--provider',
                                      'nimbus'),
                         "unknown provider 'nimbus' (the layout has: "
                         "fake-1)")

    def test_label_list(self):
        env = self.useFixture(CliEnv(min_ready=2))
        self.env = env
        self.ready_node('small')
        self.ready_node('small')
        in_use = self.ready_node('large')
        env.store.set_node_state(in_use['id'], node_states.IN_USE)
        env.store.create_node('small', base.PROVIDER, base.POOL)
        env.store.create_node('retired', base.PROVIDER, base.POOL)
        labels = {row['name']: row for row in env.json('label', 'list')}
        self.assertEqual({'name': 'small', 'min-ready': 2, 'ready': 2,
                          'building': 1, 'in-use': 0, 'hold': 0,
                          'total': 3}, labels['small'])
        self.assertEqual({'name': 'large', 'min-ready': 0, 'ready': 0,
                          'building': 0, 'in-use': 1, 'hold': 0,
                          'total': 1}, labels['large'])
        # A label that left the layout but still has nodes is listed.
        self.assertEqual(1, labels['retired']['building'])

    def test_provider_list(self):
        self.ready_node('small')
        self.ready_node('large')
        providers = self.env.json('provider', 'list')
        self.assertEqual([{
            'name': base.PROVIDER, 'driver': 'fake', 'pools': [base.POOL],
            'nodes': 2,
            'limits': {'instances': 10, 'cores': None, 'ram': None},
            'used': {'instances': 2, 'cores': 2, 'ram': 2048},
        }], providers)

    def test_provider_list_shows_the_limits_that_apply(self):
        provider = base.fake_provider(labels=('small', 'large'),
                                      quota={'instances': 10})
        second = dict(provider['pools'][0], name='second', **{
            'max-servers': 3, 'max-cores': 12, 'max-ram': 4096})
        provider['pools'][0].update({'max-servers': 4, 'max-cores': 8,
                                     'max-ram': 8192})
        provider['pools'].append(second)
        self.env.write_layout({'labels': [{'name': 'small'},
                                          {'name': 'large'}],
                               'providers': [provider]})
        # instances: the pools' 4 + 3 under the cloud's 10; cores and
        # RAM: the pools' alone (the fake cloud sets no such limit).
        self.assertEqual({'instances': 7, 'cores': 20, 'ram': 12288},
                         self.env.json('provider', 'list')[0]['limits'])
        table = self.env.cli('provider', 'list', '-c', 'limits')
        self.assertIn('| instances=7, cores=20, ram=12288 |', table.stdout)
        # A pool without max-cores leaves cores to the cloud: unlimited.
        del provider['pools'][1]['max-cores']
        self.env.write_layout({'labels': [{'name': 'small'},
                                          {'name': 'large'}],
                               'providers': [provider]})
        self.assertEqual({'instances': 7, 'cores': None, 'ram': 12288},
                         self.env.json('provider', 'list')[0]['limits'])

    def test_fleet_commands_with_bad_layout(self):
        self.env.write_layout({'labels': [{'name': 'small', 'size': 3}]})
        self.assertFails(self.env.cli('label', 'list'),
                         '%s: labels[0].size: extra keys not allowed'
                         % self.env.layout_path)


class TestConfigValidate(CliTestCase):

    def validate(self, layout=None, options=None):
        path = os.path.join(self.env.path, 'other.conf')
        layout_path = os.path.join(self.env.path, 'other-layout.yaml')
        if layout is not None:
            self.env.write_layout(layout, layout_path)
        conf = {'launcher': {'layout_file': layout_path}}
        for section, values in (options or {}).items():
            conf.setdefault(section, {}).update(values)
        self.env.write_conf(conf, path)
        return self.env.cli('config', 'validate', conf_path=path), \
            path, layout_path

    def provider(self, **pool):
        entry = base.fake_provider(cloud_path=self.env.cloud_path)
        entry['pools'][0].update(pool)
        return entry

    def test_valid(self):
        result = self.env.cli('config', 'validate')
        self.assertEqual(Result(0, 'valid\n', ''), result)

    def test_unknown_key(self):
        result, _conf, layout = self.validate({
            'labels': [{'name': 'small'}],
            'providers': [self.provider(**{'max-srvers': 3})]})
        self.assertFails(result, '%s: providers[0].pools[0].max-srvers: '
                         'extra keys not allowed' % layout)

    def test_wrong_type(self):
        result, _conf, layout = self.validate({
            'labels': [{'name': 'small'}],
            'providers': [self.provider(**{'max-servers': 'lots'})]})
        self.assertFails(result, '%s: providers[0].pools[0].max-servers: '
                         'expected int' % layout)

    def test_undefined_pool_label(self):
        result, _conf, layout = self.validate({
            'labels': [{'name': 'small'}],
            'providers': [self.provider(labels=[{'name': 'huge'}])]})
        self.assertFails(result, "%s: providers[0].pools[0].labels[0].name: "
                         "label 'huge' is not defined in the top-level "
                         "labels" % layout)

    def test_unknown_driver(self):
        result, _conf, layout = self.validate({
            'labels': [{'name': 'small'}],
            'providers': [{'name': 'p', 'driver': 'nimbus'}]})
        self.assertFails(result, "%s: providers[0].driver: unknown driver "
                         "'nimbus'" % layout)
        self.assertNotIn('Could not load', result.stderr)

    def test_missing_layout(self):
        result, _conf, layout = self.validate()
        self.assertFails(result, '%s: layout file not found (set '
                         '[launcher] layout_file)' % layout)

    def test_config_wrong_type_and_unknown_keys(self):
        result, conf, _layout = self.validate(
            {'labels': [{'name': 'small'}]},
            {'database': {'pool_size': 'many', 'conection': 'x'},
             'launcher': {'request_interval': 0},
             'bogus': {'x': 1}})
        self.assertFails(result, "%s: [database] pool_size: invalid value "
                         "'many'" % conf)
        self.assertIn('%s: [launcher] request_interval: invalid value '
                      "'0': Should be greater than or equal to 0.05" % conf,
                      result.stderr)
        self.assertIn('%s: [database] conection: unknown option' % conf,
                      result.stderr)
        self.assertIn('%s: [bogus]: unknown section' % conf, result.stderr)

    def test_bad_config_fails_other_commands(self):
        _result, conf, _layout = self.validate(
            {'labels': [{'name': 'small'}]},
            {'database': {'pool_size': 'many'}})
        result = self.env.cli('node', 'list', conf_path=conf)
        self.assertFails(result, "error: %s: [database] pool_size: invalid "
                         "value 'many'" % conf)

    def test_missing_config_file(self):
        missing = os.path.join(self.env.path, 'missing.conf')
        result = self.env.cli('config', 'validate', conf_path=missing)
        self.assertFails(result, '%s: config file not found' % missing)
        result = self.env.manage('db', 'sync', conf_path=missing)
        self.assertFails(result, '%s: config file not found' % missing)


class TestCommon(CliTestCase):
    """The config loading that every console script shares."""

    def test_load_config_and_make_context(self):
        conf = common.load_config(['--config-file', self.env.conf_path],
                                  'fleetflow-test', setup_logging=False)
        self.assertEqual(self.env.state_path, conf.state_path)
        ctx = common.make_context(conf)
        self.addCleanup(ctx.engine.dispose)
        self.assertEqual([base.PROVIDER], list(ctx.providers))
        self.assertEqual(self.env.layout_path, ctx.layout.source)

    def test_load_config_bad_value_exits_1(self):
        self.env.write_conf({'database': {'busy_timeout': 'long'}})
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            e = self.assertRaises(SystemExit, common.load_config,
                                  ['--config-file', self.env.conf_path],
                                  'fleetflow-test')
        self.assertEqual(1, e.code)
        self.assertEqual("fleetflow-test: error: %s: [database] "
                         "busy_timeout: invalid value 'long': invalid "
                         "literal for int() with base 10: 'long'\n"
                         % self.env.conf_path, stderr.getvalue())

    def test_load_config_warns_of_unknown_options(self):
        self.env.write_conf({'launcher': {'layot_file': 'x'}})
        common.load_config(['--config-file', self.env.conf_path],
                           'fleetflow-test', setup_logging=False)
        self.assertIn('%s: [launcher] layot_file: unknown option (ignored)'
                      % self.env.conf_path, self.logger.output)

    def test_make_context_bad_layout_exits_1(self):
        conf = common.read_config(['--config-file', self.env.conf_path],
                                  'fleetflow-test')
        self.env.write_layout({'labels': [{'name': 'small',
                                           'min-ready': -1}]})
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            e = self.assertRaises(SystemExit, common.make_context, conf,
                                  prog='fleetflow-test')
        self.assertEqual(1, e.code)
        self.assertIn('fleetflow-test: error: %s: labels[0].min-ready: '
                      % self.env.layout_path, stderr.getvalue())
