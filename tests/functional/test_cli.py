"""The console scripts as a user runs them, with a real launcher process.

``fleetflow-manage db sync`` sets up a SQLite database, a
``fleetflow-launcher`` process serves it on the fake cloud, and the tests
drive it with ``fleetflow ... -f json``.
"""

import json
import os
import signal
import subprocess
import sys

import fixtures
import testtools
from testtools import content

from fleetflow.drivers import base as driver_base
from fleetflow import layout as ff_layout
from tests import base
from tests.unit import test_cli

MODULES = {'fleetflow': 'fleetflow.cmd.cli',
           'fleetflow-manage': 'fleetflow.cmd.manage',
           'fleetflow-launcher': 'fleetflow.cmd.launcher'}

HAVE_LAUNCHER = os.path.exists(os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), 'fleetflow', 'launcher.py'))


def script(name):
    """The console script ``name`` of this environment."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(path):
        return [path]
    return [sys.executable, '-m', MODULES[name]]


class ScriptEnv(test_cli.CliEnv):
    """:class:`CliEnv` whose commands run the console scripts."""

    def _script(self, name, args, conf_path):
        proc = subprocess.run(
            script(name) + ['--config-file', conf_path or self.conf_path]
            + list(args), capture_output=True, text=True, timeout=120)
        return test_cli.Result(proc.returncode, proc.stdout, proc.stderr)

    def cli(self, *args, conf_path=None):
        return self._script('fleetflow', args, conf_path)

    def manage(self, *args, conf_path=None):
        return self._script('fleetflow-manage', args, conf_path)


class LauncherProcess(fixtures.Fixture):
    """``fleetflow-launcher --config-file F`` in a child process."""

    def __init__(self, env):
        super().__init__()
        self.env = env

    def _setUp(self):
        self.log_path = os.path.join(self.env.path, 'launcher.log')
        self.log = open(self.log_path, 'w')
        self.addCleanup(self.log.close)
        self.proc = subprocess.Popen(
            script('fleetflow-launcher') + ['--config-file',
                                            self.env.conf_path],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.addCleanup(self.stop)
        self.addDetail('launcher-log', content.content_from_file(
            self.log_path, buffer_now=False))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for(predicate, timeout=30, interval=0.1, message=None):
    return base.FleetflowFixture.wait_for(predicate, timeout, interval,
                                          message)


class ScriptTestCase(base.TestCase):

    TIMEOUT = 300

    def make_env(self, **kwargs):
        return self.useFixture(ScriptEnv(**kwargs))

    def assertFails(self, result, message):
        self.assertEqual(1, result.rc, result)
        self.assertIn(message, result.stderr)
        self.assertNotIn('Traceback', result.stderr)


class TestScripts(ScriptTestCase):
    """The console scripts without a launcher."""

    def test_manage_db_sync_and_version(self):
        env = self.make_env(sync=False)
        result = env.manage('db', 'sync')
        self.assertEqual(0, result.rc, result)
        self.assertIn('upgraded from revision (empty) to', result.stdout)
        version = json.loads(env.manage('db', 'version', '-f',
                                        'json').stdout)
        self.assertTrue(version['up_to_date'])
        self.assertEqual([], env.json('node', 'list'))

    def test_config_validate(self):
        env = self.make_env()
        self.assertEqual(test_cli.Result(0, 'valid\n', ''),
                         env.cli('config', 'validate'))
        env.write_layout({'labels': [{'name': 'small'}],
                          'providers': [{'name': 'p', 'driver': 'nimbus',
                                         'pools': [{'name': 'main',
                                                    'max-srvers': 1}]}]})
        result = env.cli('config', 'validate')
        self.assertFails(result, "%s: providers[0].driver: unknown driver "
                         "'nimbus'" % env.layout_path)
        env.write_layout({'labels': [{'name': 'small'}],
                          'providers': [base.fake_provider(
                              labels=('small', 'large'))]})
        self.assertFails(env.cli('config', 'validate'),
                         "%s: providers[0].pools[0].labels[1].name: label "
                         "'large' is not defined" % env.layout_path)

    def test_user_errors_without_traceback(self):
        env = self.make_env()
        self.assertFails(env.cli('node', 'show', 'nope'),
                         'error: node nope not found')
        self.assertFails(env.cli('request', 'release', 'nope'),
                         'error: request nope not found')

    def launcher_once(self, env):
        """The launcher run to its end: it must fail at once here."""
        proc = subprocess.run(
            script('fleetflow-launcher') + ['--config-file', env.conf_path],
            capture_output=True, text=True, timeout=120)
        return test_cli.Result(proc.returncode, proc.stdout, proc.stderr)

    def assertOneLine(self, result, line):
        self.assertEqual(1, result.rc, result)
        self.assertEqual([line], result.stderr.splitlines(), result)

    def test_launcher_before_db_sync(self):
        env = self.make_env(sync=False)
        os.makedirs(env.state_path)
        url = 'sqlite:///%s/fleetflow.sqlite' % env.state_path
        self.assertOneLine(
            self.launcher_once(env),
            'fleetflow-launcher: error: database %s has no fleetflow '
            'tables: run "fleetflow-manage db sync"' % url)

    def test_database_in_missing_directory(self):
        env = self.make_env(sync=False)
        missing = os.path.join(env.path, 'missing')
        env.write_conf({'DEFAULT': {'state_path': env.state_path},
                        'database': {'connection': 'sqlite:///%s/ff.sqlite'
                                     % missing},
                        'launcher': {'layout_file': env.layout_path}})
        message = ('error: cannot open database file %s/ff.sqlite: its '
                   'directory %s does not exist (check [DEFAULT] state_path '
                   'or [database] connection; "fleetflow-manage db sync" '
                   'creates the file)' % (missing, missing))
        self.assertOneLine(self.launcher_once(env),
                           'fleetflow-launcher: ' + message)
        self.assertOneLine(env.cli('node', 'list'), message)
        self.assertOneLine(env.cli('provider', 'list'), message)

    def test_leak_is_visible(self):
        env = self.make_env()
        layout = ff_layout.load(env.layout_path)
        entry = layout.providers[base.PROVIDER]
        driver = entry['driver-class'](entry,
                                       base.make_conf(env.state_path))
        leak = driver.create_instance(
            'lost-node', entry['pools'][0], {'name': 'small'},
            {driver_base.META_NODE_ID: 'lost-node',
             driver_base.META_PROVIDER: base.PROVIDER,
             driver_base.META_POOL: base.POOL})
        rows = env.json('instance', 'list', '--provider', base.PROVIDER)
        self.assertEqual([{'provider': base.PROVIDER,
                           'external_id': leak.external_id,
                           'node_id': 'lost-node', 'state': 'active',
                           'known': False, 'node_state': None,
                           'leaked': True}], rows)


@testtools.skipUnless(HAVE_LAUNCHER, 'fleetflow/launcher.py is not there')
class TestWithLauncher(ScriptTestCase):
    """The CLI against a running ``fleetflow-launcher``."""

    def start(self, **env_args):
        env_args.setdefault('create_latency', 0.2)
        self.env = self.make_env(**env_args)
        self.launcher = self.useFixture(LauncherProcess(self.env))
        return self.env

    def nodes(self, *args):
        return self.env.json('node', 'list', *args)

    def test_request_lifecycle(self):
        env = self.start()
        request = env.json('request', 'create', 'small', 'large', '--wait',
                           '--timeout', '60')
        self.assertEqual('fulfilled', request['state'], request)
        self.assertEqual(['small', 'large'], request['labels'])
        self.assertEqual(2, len(request['nodes']))
        self.assertEqual(request, env.json('request', 'show',
                                           request['id']))
        self.assertEqual([request['id']], [
            r['id'] for r in env.json('request', 'list')])

        for node_id in request['nodes']:
            node = env.json('node', 'show', node_id)
            self.assertEqual('in-use', node['state'])
            self.assertEqual(request['id'], node['request_id'])
            self.assertEqual('198.51.100.1', node['interface_ip'])
            self.assertEqual(1, node['launch_attempts'])
            self.assertTrue(node['external_id'].startswith('fake-'))

        rows = env.json('flow', 'show', request['nodes'][0])
        self.assertEqual(('flow', 'SUCCESS'),
                         (rows[0]['kind'], rows[0]['state']))
        self.assertTrue(rows[0]['flow'].startswith('launch-'))
        self.assertIn('create-instance', [row['atom'] for row in rows])

        instances = env.json('instance', 'list', '--provider',
                             base.PROVIDER)
        self.assertEqual(sorted(request['nodes']),
                         sorted(i['node_id'] for i in instances))
        self.assertTrue(all(i['known'] and not i['leaked']
                            for i in instances))

        labels = {row['name']: row for row in env.json('label', 'list')}
        self.assertEqual(1, labels['small']['in-use'])
        self.assertEqual(1, labels['large']['in-use'])
        provider = env.json('provider', 'list')[0]
        self.assertEqual(2, provider['used']['instances'])
        self.assertEqual(10, provider['limits']['instances'])

        result = env.cli('request', 'release', request['id'])
        self.assertEqual(0, result.rc, result)
        wait_for(lambda: not self.nodes(),
                 message='the released nodes were not deleted')
        wait_for(lambda: not env.json('instance', 'list'),
                 message='the released instances were not deleted')

    def test_release_wakes_an_idle_launcher(self):
        # Passes at most every 10 minutes: only the release, a commit by
        # another process, can start the pass that deletes the nodes.
        env = self.start(conf={'launcher': {'request_interval': 600}})
        request = env.json('request', 'create', 'small', '--wait',
                           '--timeout', '60')
        self.assertEqual('fulfilled', request['state'], request)
        result = env.cli('request', 'release', request['id'])
        self.assertEqual(0, result.rc, result)
        wait_for(lambda: not self.nodes(),
                 message='the release did not wake the launcher')

    def test_request_for_unknown_label_fails(self):
        env = self.start()
        result = env.cli('request', 'create', 'gpu', '--wait', '--timeout',
                         '60', '-f', 'json')
        self.assertFails(result, 'failed: unknown label(s): gpu')
        self.assertEqual('failed', json.loads(result.stdout)['state'])

    def test_request_wait_timeout(self):
        # Quota for one instance, which a first request holds: the second
        # waits in the queue. (A cloud with room for no instance at all
        # declines the request: it could never be served.)
        env = self.start(quota={'instances': 1})
        first = env.json('request', 'create', 'small', '--wait',
                         '--timeout', '60')
        self.assertEqual('fulfilled', first['state'], first)
        result = env.cli('request', 'create', 'small', '--wait',
                         '--timeout', '1', '-f', 'json')
        request = json.loads(result.stdout)
        self.assertFails(result, 'request %s is still requested after 1'
                         % request['id'])
        self.assertEqual(0, env.cli('request', 'release',
                                    request['id']).rc)

    def test_node_delete_wait(self):
        env = self.start(min_ready=1)
        ready = wait_for(lambda: self.nodes('--state', 'ready'))
        node_id = ready[0]['id']
        deleted = env.json('node', 'delete', node_id, '--wait',
                           '--timeout', '60')
        self.assertEqual({'id': node_id, 'state': 'deleted'}, deleted)
        self.assertNotIn(node_id, [n['id'] for n in self.nodes()])
        # min-ready launches a spare in its place.
        wait_for(lambda: self.nodes('--state', 'ready'))

    def test_hold_and_release(self):
        env = self.start(min_ready=1)
        node_id = wait_for(lambda: self.nodes('--state', 'ready'))[0]['id']
        held = env.json('node', 'hold', node_id, '--reason', 'debug',
                        '--expires', '3600')
        self.assertEqual(('hold', 'debug'),
                         (held['state'], held['hold_reason']))
        self.assertFails(env.cli('node', 'delete', node_id),
                         'held (debug); release it first')
        # A held node is not a spare: the launcher replaces it.
        wait_for(lambda: [n for n in self.nodes('--state', 'ready')
                          if n['id'] != node_id])
        self.assertEqual('hold', env.json('node', 'show', node_id)['state'])
        self.assertEqual('used',
                         env.json('node', 'release', node_id)['state'])
        wait_for(lambda: node_id not in [n['id'] for n in self.nodes()],
                 message='the released node was not deleted')

    def test_hold_expires(self):
        env = self.start(min_ready=1)
        node_id = wait_for(lambda: self.nodes('--state', 'ready'))[0]['id']
        env.json('node', 'hold', node_id, '--expires', '1')
        wait_for(lambda: node_id not in [n['id'] for n in self.nodes()],
                 message='the node was not deleted when its hold expired')
