"""Every console script answers ``--version`` with its name and version,
and loads without the optional extras."""

import contextlib
from importlib import metadata
import io
import subprocess
import sys
from unittest import mock

import testtools

from fleetflow import cmd
from fleetflow.cmd import bench
from fleetflow.cmd import launcher as cmd_launcher
from fleetflow import exceptions
import fleetflow.zk


def console_scripts():
    return [entry for entry in metadata.distribution('fleetflow')
            .entry_points if entry.group == 'console_scripts']


class TestVersion(testtools.TestCase):

    def test_every_console_script(self):
        scripts = console_scripts()
        self.assertIn('fleetflow-launcher', [s.name for s in scripts])
        for script in scripts:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                try:
                    rc = script.load()(['--version'])
                except SystemExit as e:
                    rc = e.code
            self.assertIn(rc, (0, None), script.name)
            self.assertEqual('%s %s' % (script.name, cmd.version()),
                             out.getvalue().strip(), script.name)

    def test_every_benchmark(self):
        for name in bench.BENCHMARKS:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                try:
                    rc = bench.main([name, '--version'])
                except SystemExit as e:
                    rc = e.code
            self.assertEqual(0, rc, name)
            self.assertEqual('fleetflow-bench %s %s' % (name, cmd.version()),
                             out.getvalue().strip())

    def test_version_is_the_installed_one(self):
        self.assertEqual(metadata.version('fleetflow'), cmd.version())


#: the clients of the optional extras (``postgresql``, ``redis``,
#: ``zookeeper``)
EXTRAS = ('psycopg2', 'redis', 'kazoo')


class TestWithoutExtras(testtools.TestCase):
    """A plain ``pip install fleetflow`` runs every console script."""

    def test_console_scripts_import_without_the_extras(self):
        code = ('import sys\n'
                'for name in %r: sys.modules[name] = None\n'
                'from importlib import metadata\n'
                'for entry in metadata.distribution("fleetflow")'
                '.entry_points:\n'
                '    if entry.group == "console_scripts": entry.load()\n'
                % (EXTRAS,))
        result = subprocess.run([sys.executable, '-c', code],
                                capture_output=True, text=True)
        self.assertEqual(0, result.returncode, result.stderr)

    def test_zookeeper_without_its_extra_is_named(self):
        ctx = mock.Mock()
        ctx.layout.zookeeper = {'servers': [{'host': 'zk', 'port': 2281}]}
        # As if kazoo were missing: the front end cannot be imported (nor
        # found on its package, where an earlier import leaves it).
        with mock.patch.dict(sys.modules, {'fleetflow.zk.frontend': None}), \
                mock.patch.dict(fleetflow.zk.__dict__):
            fleetflow.zk.__dict__.pop('frontend', None)
            e = self.assertRaises(exceptions.ConfigError,
                                  cmd_launcher.start_frontend, ctx, None)
        self.assertIn("pip install 'fleetflow[zookeeper]'", str(e))

    def test_no_zookeeper_no_front_end(self):
        ctx = mock.Mock()
        ctx.layout.zookeeper = None
        self.assertIsNone(cmd_launcher.start_frontend(ctx, None))
