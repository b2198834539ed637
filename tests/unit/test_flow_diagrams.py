"""doc/flows/*.dot must be what tools/flow_diagrams.py draws from the code."""

import importlib.util
import os

import fixtures
import testtools

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'flow_diagrams', os.path.join(ROOT, 'tools', 'flow_diagrams.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestFlowDiagrams(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tool = _load_tool()

    def test_diagrams_are_current(self):
        for name, text in sorted(self.tool.diagrams().items()):
            path = os.path.join(ROOT, 'doc', 'flows', name)
            with open(path) as f:
                self.assertEqual(
                    text, f.read(),
                    '%s is stale: run tools/flow_diagrams.py' % path)

    def test_every_atom_is_drawn(self):
        diagrams = self.tool.diagrams()
        launch, delete = diagrams['launch.dot'], diagrams['delete.dot']
        for name in ('mark-building', 'launch-attempts', 'create-instance',
                     'wait-active-deadline', 'wait-instance-active',
                     'update-node', 'keyscan-deadline', 'scan-host-keys',
                     'save-host-keys', 'mark-ready'):
            self.assertIn('"%s" [' % name, launch)
        for name in ('mark-deleting', 'delete-instance',
                     'wait-gone-deadline', 'wait-instance-gone',
                     'remove-node'):
            self.assertIn('"%s" [' % name, delete)
        self.assertIn('"mark-building" -> "launch-attempts";', launch)
        self.assertIn('"cluster_launch-attempt"', launch)

    def test_check_reports_stale_files(self):
        out = self.useFixture(fixtures.TempDir()).path
        self.assertEqual(1, self.tool.main(['--check', '--out', out]))
        self.assertEqual(0, self.tool.main(['--out', out]))
        self.assertEqual(0, self.tool.main(['--check', '--out', out]))
        with open(os.path.join(out, 'delete.dot'), 'a') as f:
            f.write('// edited\n')
        self.assertEqual(1, self.tool.main(['--check', '--out', out]))
