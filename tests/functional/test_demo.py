"""``fleetflow-demo``, the README's first command, as a user runs it."""

import os
import re
import signal
import subprocess
import sys
import threading

import fixtures
from testtools import content

from tests import base

SERVER_MODULE = b'fleetflow.drivers.local_server'


def demo_command():
    path = os.path.join(os.path.dirname(sys.executable), 'fleetflow-demo')
    if os.path.exists(path):
        return [path]
    return [sys.executable, '-m', 'fleetflow.cmd.demo']


def local_servers(state_path):
    """Pids of local driver server processes of ``state_path``."""
    pids = []
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % name, 'rb') as f:
                args = f.read().split(b'\0')
        except OSError:
            continue
        if SERVER_MODULE in args and any(
                os.fsencode(state_path) in arg for arg in args):
            pids.append(int(name))
    return pids


class TestDemo(base.TestCase):

    TIMEOUT = 150

    def kill_servers(self, state_path):
        for pid in local_servers(state_path):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def test_demo(self):
        state = os.path.join(self.useFixture(fixtures.TempDir()).path,
                             'demo')
        self.addCleanup(self.kill_servers, state)
        proc = subprocess.run(
            demo_command() + ['--state-path', state, '--nodes', '2'],
            capture_output=True, text=True, timeout=120)
        self.addDetail('stdout', content.text_content(proc.stdout))
        self.addDetail('stderr', content.text_content(proc.stderr))
        self.assertEqual(0, proc.returncode)
        out = proc.stdout

        ready = dict(re.findall(
            r'node (\w{8})  ready +127\.0\.0\.1:\d+, (\d+) host keys '
            r'scanned', out))
        self.assertEqual(2, len(ready), out)
        self.assertTrue(all(int(keys) >= 1 for keys in ready.values()),
                        out)
        ran = dict(re.findall(r'node (\w{8})  ran a command, exit 0: '
                              r'hello from (\S+)', out))
        self.assertEqual(set(ready), set(ran), out)
        for home in ran.values():
            self.assertTrue(home.startswith(os.path.join(state, 'local')),
                            home)
        deleted = re.findall(r'node (\w{8})  deleted', out)
        self.assertEqual(sorted(ready), sorted(deleted), out)
        self.assertRegex(out, r'done in [\d.]+s: 2 nodes launched, scanned, '
                         r'used and deleted; 0 instances left')
        self.assertEqual([], local_servers(state))

    def test_ctrl_c_stops_cleanly_and_leaves_no_server(self):
        state = os.path.join(self.useFixture(fixtures.TempDir()).path,
                             'demo')
        self.addCleanup(self.kill_servers, state)
        # Nodes that take long to boot: the demo is waiting for them.
        proc = subprocess.Popen(
            demo_command() + ['--state-path', state, '--nodes', '2',
                              '--boot-delay', '60'],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(proc.kill)
        watchdog = threading.Timer(90, proc.kill)
        watchdog.start()
        self.addCleanup(watchdog.cancel)
        shown = []
        for line in proc.stdout:
            shown.append(line)
            # It says what it waits for, once the servers run.
            if line.endswith('waiting: 2 building (each is an SSH server '
                             'starting on 127.0.0.1; its host keys are '
                             'scanned once it answers)\n'):
                break
        self.assertEqual(2, len(local_servers(state)), ''.join(shown))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        out = ''.join(shown) + out
        self.addDetail('stdout', content.text_content(out))
        self.addDetail('stderr', content.text_content(err))
        self.assertEqual(130, proc.returncode)
        self.assertNotIn('Traceback', err)
        self.assertIn('interrupted; 2 instances deleted, none left', out)
        self.assertEqual([], local_servers(state))

    def test_state_path_it_did_not_make_is_left_alone(self):
        state = self.useFixture(fixtures.TempDir()).path
        with open(os.path.join(state, 'precious'), 'w') as f:
            f.write('keep me')
        proc = subprocess.run(
            demo_command() + ['--state-path', state],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(1, proc.returncode)
        self.assertIn('%s is not empty and was not made by fleetflow-demo'
                      % state, proc.stderr)
        self.assertEqual(['precious'], os.listdir(state))
