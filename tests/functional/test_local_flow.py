"""A launch and a delete with the ``local`` driver, through the runner.

The node is a real SSH server process on 127.0.0.1. The launch flow scans
its host keys (host-key-checking on); a consumer then logs in with exactly
those keys and paramiko's ``RejectPolicy`` (what
:func:`fleetflow.ssh.run_command` does), runs a command and reads its
output. The delete flow stops the server process.
"""

import getpass
import json
import os
import signal

import paramiko

from fleetflow.drivers import local
from fleetflow import exceptions
from fleetflow import flowinfo
from fleetflow import keyscan
from fleetflow import ssh
from tests import base
from tests.unit.drivers import test_local
from tests.unit import ssh_fixture

PROVIDER = 'here'
LABEL = 'small'


class TestLocalFlow(base.TestCase):

    TIMEOUT = 120

    def setUp(self):
        super().setUp()
        self.key, _ = ssh_fixture.client_key('local-flow')
        self.ff = self.useFixture(base.FleetflowFixture(layout={
            'labels': [{'name': LABEL}],
            'providers': [{
                'name': PROVIDER, 'driver': 'local',
                # Refuses connections for a while: the keyscan retries.
                'boot-delay': 0.5,
                'launch-retries': 1, 'launch-timeout': 60,
                'boot-timeout': 60,
                'authorized-keys': [ssh_fixture.public_key(self.key)],
                'pools': [{'name': base.POOL, 'host-key-checking': True,
                           'labels': [{'name': LABEL,
                                       'username': getpass.getuser()}]}],
            }]}))
        self.driver = self.ff.driver
        self.pids = []
        self.addCleanup(self._reap)

    def _reap(self):
        """Delete what a failed test left; no server process survives."""
        for instance in self.driver.list_instances():
            try:
                self.driver.delete_instance(instance.external_id)
            except Exception:
                pass
        for pid in self.pids:
            if test_local.pid_running(pid):
                os.killpg(pid, signal.SIGKILL)

    def server_pid(self, external_id):
        path = os.path.join(self.driver.state_path, external_id,
                            local.INSTANCE_FILE)
        with open(path) as f:
            pid = json.load(f)['pid']
        self.pids.append(pid)
        return pid

    def test_launch_login_delete(self):
        node, run = self.ff.launch(label=LABEL, timeout=60)
        self.assertEqual('SUCCESS', run.state, run.error)
        self.assertEqual(('ready', '127.0.0.1', getpass.getuser()),
                         (node['state'], node['interface_ip'],
                          node['username']))
        pid = self.server_pid(node['external_id'])
        self.assertTrue(test_local.pid_running(pid))

        # The keys were scanned from the server: the ones it generated.
        instance = base.listed(self.driver, node['external_id'])
        self.assertEqual(3, len(node['host_keys']))
        self.assertEqual(sorted(instance.host_keys),
                         sorted(node['host_keys']))
        atoms = {atom['name']: atom['state'] for flow in
                 flowinfo.describe_flows(self.ff.ctx, node['id'])
                 for atom in flow['atoms']}
        self.assertEqual(('SUCCESS', 'SUCCESS'),
                         (atoms['scan-host-keys'], atoms['save-host-keys']))

        # A consumer logs in with the recorded keys, strictly checked.
        status, out, err = ssh.run_command(
            node['interface_ip'], node['connection_port'], node['username'],
            self.key, node['host_keys'], 'echo "hello from $(pwd)"; '
            'echo to stderr >&2; exit 3', timeout=30)
        home = os.path.join(self.driver.state_path, node['external_id'],
                            'home')
        self.assertEqual((3, 'hello from %s\n' % home, b'to stderr\n'),
                         (status, out.decode(), err))
        # Any other key for the host is refused.
        other = ssh.key_string(ssh_fixture.host_key('ed25519', 'other'))
        self.assertRaises(paramiko.BadHostKeyException, ssh.run_command,
                          node['interface_ip'], node['connection_port'],
                          node['username'], self.key, [other], 'true',
                          timeout=30)

        run = self.ff.delete(self.ff.node(node['id']), timeout=60)
        self.assertEqual('SUCCESS', run.state, run.error)
        self.assertIsNone(self.ff.node(node['id']))
        self.assertFalse(test_local.pid_running(pid))
        self.assertFalse(os.path.exists(os.path.dirname(home)))
        self.assertEqual([], self.driver.list_instances())
        self.assertRaises(exceptions.HostUnreachable,
                          keyscan.scan_host_keys, '127.0.0.1',
                          node['connection_port'])
