"""The persistence cost benchmark runs and reports both backends."""

import io
import json
from unittest import mock

from fleetflow.bench import flows
from tests import base


class TestBenchFlows(base.TestCase):

    def test_small_run(self):
        out = io.StringIO()
        with mock.patch('sys.stdout', out):
            rc = flows.main(['-n', '3', '--warmup', '1',
                             '--backends', 'sql-stock'])
        self.assertEqual(0, rc, out.getvalue())
        lines = out.getvalue().splitlines()
        report = json.loads(lines[0])
        for backend in ('memory', 'sql', 'sql-stock'):
            result = report[backend]
            self.assertEqual(6, result['flows'])
            self.assertEqual(0, result['not_ready'])
            self.assertEqual(0, result['left'])
            self.assertGreater(result['cpu_s'], 0)
            self.assertGreater(result['statements'], 0)
        self.assertGreater(report['ratio_cpu'], 0)
        self.assertIn('ratio_cpu_sql-stock', report)
        self.assertTrue(lines[1].startswith('backend'))
        self.assertTrue(lines[-1].startswith('sql/memory'))

    def test_one_node_at_a_time(self):
        out = io.StringIO()
        with mock.patch('sys.stdout', out):
            rc = flows.main(['-n', '3', '--warmup', '1', '--at-once', '1',
                             '--json'])
        self.assertEqual(0, rc, out.getvalue())
        report = json.loads(out.getvalue())
        self.assertEqual(1, report['at_once'])
        for backend in ('memory', 'sql'):
            self.assertEqual(6, report[backend]['flows'])
            self.assertEqual(0, report[backend]['not_ready'])
            self.assertEqual(0, report[backend]['left'])
