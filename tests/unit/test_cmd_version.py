"""Every console script answers ``--version`` with its name and version."""

import contextlib
from importlib import metadata
import io

import testtools

from fleetflow import cmd
from fleetflow.cmd import bench


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
