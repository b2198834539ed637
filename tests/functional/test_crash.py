"""Kill a launcher anywhere in its flows; it must neither leak nor double.

The launcher is :mod:`tests.functional.crash_child`, a process that
resumes the unfinished flows of its database and drives a fixed plan of
nodes (launch all, delete some) against the fake cloud, whose state is a
file that outlives it. The test SIGKILLs it many times, at random moments
after it has started its flows, and in some runs makes it kill itself
right after the cloud created or deleted an instance (before the flow
could record it). Then it lets a last run finish and checks, against the
fake cloud's own table of every instance it ever had:

- every planned node is ready, failed, aborted or deleted;
- a ready node has exactly one live instance, the one it records;
- a deleted node has no live instance; a failed or aborted one at most
  the instance its last revert recorded and asked to delete (its delete
  flow, which the launcher runs next, waits for it gone);
- no live instance belongs to no node;
- no node ever had more instances than launch attempts, nor two alive
  at once;
- no flow is left unfinished.

What is asserted holds for every interleaving; only which phases the
kills hit varies between runs (it is attached to the test's details).
"""

import collections
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

from testtools import content

from fleetflow import node_states
from tests import base
from tests.functional import crash_child

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

NODES = 60
NEW_PER_RUN = 3
DELETE_EVERY = 2
LAUNCH_RETRIES = 3
KILLS = 20
FAULTS = {'instance-error': 0.15, 'create-error': 0.1, 'delete-error': 0.15,
          'rate-limit': 0.1, 'quota-error': 0.03}
UNFINISHED = (None, 'PENDING', 'RUNNING', 'SUSPENDED', 'RESUMING',
              'REVERTING', 'SUSPENDING')


class TestCrash(base.TestCase):

    TIMEOUT = 600

    def setUp(self):
        super().setUp()
        self.seed = int(os.environ.get('FLEETFLOW_TEST_CRASH_SEED',
                                       random.randrange(1 << 30)))
        self.addDetail('seed', content.text_content(str(self.seed)))
        self.rng = random.Random(self.seed)
        # The test's own view: same database and cloud file, no runner.
        self.ff = self.useFixture(base.FleetflowFixture(
            start=False, runner=False))
        self.state = self.ff.state_path
        self.log_path = os.path.join(self.state, 'child.log')
        self.trace_path = os.path.join(self.state, 'trace.log')
        self.addCleanup(self._attach_log)
        keep = os.environ.get('FLEETFLOW_TEST_KEEP_STATE')
        if keep:
            # Copy the database, cloud and log there to look at them.
            self.addCleanup(shutil.copytree, self.state,
                            os.path.join(keep, self.id()),
                            dirs_exist_ok=True)
        self.hits = collections.Counter()

    def _attach_log(self):
        if os.path.exists(self.log_path):
            with open(self.log_path) as f:
                self.addDetail('child-log', content.text_content(
                    f.read()[-200000:]))

    def child(self, crash_after='', new_per_run=NEW_PER_RUN, faults=FAULTS,
              latency=(0.3, 0.3)):
        args = [sys.executable, '-m', 'tests.functional.crash_child',
                '--state', self.state, '--cloud', self.ff.cloud_path,
                '--nodes', str(NODES), '--new-per-run', str(new_per_run),
                '--delete-every', str(DELETE_EVERY),
                '--create-latency', str(latency[0]),
                '--delete-latency', str(latency[1]),
                '--launch-retries', str(LAUNCH_RETRIES),
                '--faults', json.dumps(faults),
                '--crash-after', crash_after,
                '--trace', self.trace_path,
                '--seed', str(self.rng.randrange(1 << 30))]
        log = open(self.log_path, 'a')
        self.addCleanup(log.close)
        log.write('--- run %s\n' % ' '.join(args[3:]))
        log.flush()
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=log, text=True)
        self.addCleanup(self._reap, proc)
        return proc

    @staticmethod
    def _reap(proc):
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()

    @staticmethod
    def wait_started(proc, timeout=60):
        """Wait for the child's ``started`` line (or its end)."""
        lines = []

        def read():
            lines.append(proc.stdout.readline())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        return lines[0] if lines else ''

    def note_phases(self):
        """Count what was under way when the child died (its trace)."""
        try:
            with open(self.trace_path) as f:
                lines = f.read().split('--- start\n')[-1].splitlines()
        except OSError:
            return
        under_way = collections.Counter()
        for line in lines:
            fields = line.split()
            if fields[0] == 'crash-after':
                self.hits['crash after %s' % fields[1]] += 1
                continue
            kind, atom, state = fields
            key = '%s/%s %s' % (kind, atom, 'revert' if state in (
                'REVERTING', 'REVERTED') else 'execute')
            if state in ('RUNNING', 'REVERTING'):
                under_way[key] += 1
            elif under_way[key]:
                under_way[key] -= 1
        for key, count in under_way.items():
            if count:
                self.hits['killed in %s' % key] += count

    def test_sigkill_anywhere(self):
        """With faults of every kind: no leak, no double."""
        self.kill_and_finish(KILLS, FAULTS, (0.3, 0.3))
        self.check_fleet()

    def test_sigkill_costs_no_attempt(self):
        """Without failing faults, kills alone never fail an attempt.

        Every node ends ready (or deleted) with the one instance it ever
        had: a resumed flow goes on where it stopped. Instances take
        longer to build than the launcher takes to start again, so flows
        resume in the middle of their polls.
        """
        self.kill_and_finish(KILLS // 2, {'rate-limit': 0.1}, (2.5, 1.0))
        self.check_fleet(exact=True)

    def kill_and_finish(self, kills, faults, latency):
        for run in range(kills):
            crash_after = 'create:0.3,delete:0.3' if run % 3 == 1 else ''
            proc = self.child(crash_after, faults=faults, latency=latency)
            started = self.wait_started(proc)
            if started.startswith('started'):
                time.sleep(self.rng.uniform(0, 1.2))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
            self.hits['exit %s' % proc.returncode] += 1
            self.note_phases()

        # The last run may finish.
        proc = self.child(new_per_run=NODES, faults=faults,
                          latency=latency)
        out, _ = proc.communicate(timeout=300)
        self.addDetail('phases', content.text_content(
            '\n'.join('%4d %s' % (n, k)
                      for k, n in sorted(self.hits.items()))))
        self.assertEqual(0, proc.returncode, out)
        self.assertIn('done', out)

    def check_fleet(self, exact=False):
        """Check nodes against the cloud; ``exact``: one instance each."""
        store, driver = self.ff.store, self.ff.driver
        planned = {crash_child.node_id(i): i for i in range(NODES)}
        nodes = {n['id']: n for n in store.list_nodes()}
        self.assertEqual(set(), set(nodes) - set(planned),
                         'nodes nobody planned')
        alive = collections.defaultdict(list)
        for instance in driver.list_instances():
            alive[instance.node_id].append(instance)
        history = collections.defaultdict(list)
        for row in driver.instance_history():
            history[row['node_id']].append(row)

        for ident, index in planned.items():
            node = nodes.get(ident)
            live = [i.external_id for i in alive.get(ident, [])]
            made = sorted(history.get(ident, []),
                          key=lambda r: r['created'])
            never = node is None and not made
            if never:
                # Killed between its marker and its row: never existed.
                continue
            if node is None:
                # Deleted: only nodes the plan deletes may be gone.
                self.assertTrue(crash_child.to_delete(index, DELETE_EVERY),
                                'node %s is gone: %s' % (ident, made))
                self.assertEqual([], live, 'deleted node %s' % ident)
            elif node['state'] == node_states.READY:
                self.assertFalse(crash_child.to_delete(index, DELETE_EVERY),
                                 'node %s was not deleted' % ident)
                self.assertEqual([node['external_id']], live,
                                 'ready node %s' % ident)
            else:
                self.assertIn(node['state'],
                              (node_states.FAILED, node_states.ABORTED), ident)
                self.assertTrue(node['failure'], ident)
                self.assertLessEqual(set(live), {node['external_id']},
                                     '%s node %s' % (node['state'], ident))
            if exact:
                self.assertNotIn(node and node['state'],
                                 (node_states.FAILED, node_states.ABORTED),
                                 node and node['failure'])
                self.assertEqual(1, len(made),
                                 'instances of node %s: %s' % (ident, made))
            self.assertLessEqual(len(made), LAUNCH_RETRIES,
                                 'instances of node %s: %s' % (ident, made))
            for before, after in zip(made, made[1:]):
                self.assertIsNotNone(before['gone_at'], made)
                self.assertLessEqual(before['gone_at'], after['created'],
                                     'two instances alive at once for '
                                     'node %s: %s' % (ident, made))

        owners = set(alive) - set(nodes)
        self.assertEqual(set(), owners, 'instances that no node owns')

        with contextlib.closing(
                self.ff.ctx.persistence.get_connection()) as conn:
            unfinished = [(book.uuid, flow.name, flow.state)
                          for book in conn.get_logbooks() for flow in book
                          if flow.state in UNFINISHED]
        self.assertEqual([], unfinished)
