"""The strict SSH client helper against a real SSH server."""

import logging

import fixtures
import paramiko
import testtools

from fleetflow import exceptions
from fleetflow import ssh
from tests.unit import ssh_fixture


class TestKeys(testtools.TestCase):

    def test_parse_key(self):
        key = ssh_fixture.public_key(ssh_fixture.host_key('rsa'))
        data = key.split()[1]
        self.assertEqual(('ssh-rsa', data), ssh.parse_key(key))
        self.assertEqual(('ssh-rsa', data),
                         ssh.parse_key('rsa-sha2-256 %s c@h' % data))
        self.assertRaises(ValueError, ssh.parse_key, 'ssh-rsa')
        self.assertRaises(ValueError, ssh.parse_key, 'ssh-rsa not!base64')

    def test_fingerprint(self):
        key = ssh_fixture.host_key('ed25519')
        self.assertEqual('SHA256:' + key.fingerprint.split(':', 1)[1],
                         ssh.fingerprint(ssh.key_string(key)))


class TestConnect(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.log = self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        self.key, _ = ssh_fixture.client_key()
        self.server = self.useFixture(ssh_fixture.SSHServerFixture(
            key_kinds=('ed25519', 'ecdsa', 'rsa'),
            authorized_keys=[ssh_fixture.public_key(self.key)]))

    def run_command(self, command, host_keys=None):
        return ssh.run_command('127.0.0.1', self.server.port,
                               self.server.username, self.key,
                               host_keys or self.server.keys, command,
                               timeout=10)

    def test_run(self):
        status, out, err = self.run_command(
            'echo out; echo err >&2; exit 7')
        self.assertEqual((7, b'out\n', b'err\n'), (status, out, err))

    def test_large_output_on_both_streams_capped(self):
        # the command does not stall: both streams are read to their end
        status, out, err = self.run_command(
            'head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2; '
            'exit 3')
        self.assertEqual((3, ssh.MAX_OUTPUT, ssh.MAX_OUTPUT),
                         (status, len(out), len(err)))
        self.assertIn('kept the first %d bytes of its stdout, dropped %d'
                      % (ssh.MAX_OUTPUT, 3000000 - ssh.MAX_OUTPUT),
                      self.log.output)

    def test_output_cap(self):
        client = ssh.connect('127.0.0.1', self.server.port,
                             self.server.username, self.server.keys,
                             pkey=self.key)
        self.addCleanup(client.close)
        self.assertEqual((0, b'01234', b'abc'), ssh.run(
            client, 'printf 0123456789; printf abc >&2', max_output=5))

    def test_any_one_known_key_type(self):
        for key in self.server.keys:
            self.assertEqual(0, self.run_command('true', [key])[0], key)

    def test_unknown_host_key_rejected(self):
        other = ssh_fixture.public_key(
            ssh_fixture.host_key('ed25519', 'other'))
        self.assertRaises(paramiko.BadHostKeyException, self.run_command,
                          'true', [other])

    def test_no_known_keys(self):
        self.assertRaises(exceptions.KeyscanError, ssh.connect, '127.0.0.1',
                          self.server.port, 'x', [])
