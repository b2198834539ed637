"""A short chaos soak: real launchers under faults lose nothing.

Runs ``fleetflow-bench soak`` for a minute in single-host mode (one
launcher on SQLite) and in jobboard mode (two launchers on PostgreSQL and
a redis-server of the soak's own, which it restarts), with every cloud
fault kind and SIGKILL, SIGTERM, SIGSTOP and server restarts at random
times, and checks its figures: no invariant was violated, and faults of
both kinds were actually injected. The seed of each run is attached.

The jobboard mode needs PostgreSQL (``tools/test-servers``) and the
``redis-server`` program; without them it is skipped, and fails in CI.
"""

import json
import os
import shutil
import subprocess
import sys

from testtools import content

from tests import base
from tests import db_urls

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class TestSoak(base.TestCase):

    TIMEOUT = 420

    def soak(self, *args):
        proc = subprocess.run(
            [sys.executable, '-m', 'fleetflow.cmd.bench', 'soak',
             '--duration', '60', '--fault-interval', '6', '--window', '15',
             '--drain-timeout', '180'] + list(args),
            cwd=ROOT, capture_output=True, text=True, timeout=400)
        self.addDetail('soak-log', content.text_content(proc.stderr))
        self.addDetail('soak-figures', content.text_content(proc.stdout))
        figures = json.loads(proc.stdout.splitlines()[0])
        self.assertEqual(0, figures['violations'], figures['violation'])
        self.assertEqual(0, proc.returncode)
        self.assertGreater(figures['requests_fulfilled'], 10)
        self.assertGreater(sum(figures['cloud_faults'].values()), 0)
        self.assertGreater(sum(figures['process_faults'].values()), 0)
        self.assertGreater(figures['invariant_checks'], 0)
        self.assertEqual(0, figures['faults_not_recovered'])
        return figures

    def test_single_host(self):
        figures = self.soak('--mode', 'single')
        self.assertGreater(figures['restarts'], 0)

    def test_jobboard_redis(self):
        if shutil.which('redis-server') is None:
            if os.environ.get('CI'):
                self.fail('redis-server is not installed in CI')
            self.skipTest('no redis-server program')
        # Skips (fails in CI) when PostgreSQL does not answer.
        db_urls.postgres_url(self)
        self.soak('--mode', 'redis', '--launchers', '2', '--database',
                  db_urls.configured_url())
