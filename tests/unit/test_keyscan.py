"""Keyscan against real SSH servers on loopback ports."""

import concurrent.futures
import logging
import socket
import threading
import time

import fixtures
import testtools

from fleetflow import exceptions
from fleetflow import keyscan
from fleetflow import ssh
from tests.unit import ssh_fixture

ALL_KINDS = ('ed25519', 'ecdsa', 'ecdsa384', 'ecdsa521', 'rsa')
TYPE_OF_KIND = {
    'ed25519': 'ssh-ed25519',
    'ecdsa': 'ecdsa-sha2-nistp256',
    'ecdsa384': 'ecdsa-sha2-nistp384',
    'ecdsa521': 'ecdsa-sha2-nistp521',
    'rsa': 'ssh-rsa',
}


def closed_port():
    """A loopback port nothing listens on."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


class TestScanHostKeys(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.FakeLogger(level=logging.DEBUG))

    def server(self, **kwargs):
        return self.useFixture(ssh_fixture.SSHServerFixture(**kwargs))

    def test_every_key_type_offered(self):
        server = self.server(key_kinds=ALL_KINDS)
        keys = keyscan.scan_host_keys('127.0.0.1', server.port, timeout=5)
        self.assertEqual(server.keys, keys)
        self.assertEqual(sorted(TYPE_OF_KIND.values()),
                         sorted(k.split()[0] for k in keys))

    def test_each_key_type_alone(self):
        for kind in ALL_KINDS:
            server = self.server(key_kinds=(kind,))
            keys = keyscan.scan_host_keys('127.0.0.1', server.port)
            self.assertEqual(server.keys, keys, kind)
            self.assertEqual(TYPE_OF_KIND[kind], keys[0].split()[0])

    def test_one_negotiation_per_key_type(self):
        server = self.server(key_kinds=ALL_KINDS)
        negotiations = []
        real = keyscan._negotiate

        def counting(host, port, algorithms, timeout):
            negotiations.append(list(algorithms))
            return real(host, port, algorithms, timeout)

        self.useFixture(fixtures.MockPatchObject(
            keyscan, '_negotiate', counting))
        keyscan.scan_host_keys('127.0.0.1', server.port)
        # the first offers every type, then one per type it did not get
        self.assertEqual(len(ALL_KINDS), len(negotiations))
        self.assertEqual([['ecdsa-sha2-nistp256'], ['ecdsa-sha2-nistp384'],
                          ['ecdsa-sha2-nistp521'],
                          ['rsa-sha2-512', 'rsa-sha2-256']],
                         negotiations[1:])
        # types the server does not offer are not tried
        del negotiations[:]
        server = self.server(key_kinds=('rsa', 'ecdsa384'))
        self.assertEqual(server.keys,
                         keyscan.scan_host_keys('127.0.0.1', server.port))
        self.assertEqual(2, len(negotiations))

    def test_rsa_reported_once_as_ssh_rsa(self):
        server = self.server(key_kinds=('rsa', 'ed25519'))
        keys = keyscan.scan_host_keys('127.0.0.1', server.port)
        self.assertEqual(['ssh-ed25519', 'ssh-rsa'],
                         [k.split()[0] for k in keys])

    def test_late_listener(self):
        server = self.server(listen_delay=None)
        self.assertRaises(exceptions.HostUnreachable,
                          keyscan.scan_host_keys, '127.0.0.1', server.port,
                          timeout=2)
        server.listen()
        self.assertEqual(server.keys,
                         keyscan.scan_host_keys('127.0.0.1', server.port))

    def test_listen_delay(self):
        server = self.server(listen_delay=0.5, key_kinds=('ed25519',))
        self.assertRaises(exceptions.HostUnreachable,
                          keyscan.scan_host_keys, '127.0.0.1', server.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                keys = keyscan.scan_host_keys('127.0.0.1', server.port)
                break
            except exceptions.HostUnreachable:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.1)
        self.assertEqual(server.keys, keys)

    def test_refused(self):
        e = self.assertRaises(exceptions.HostUnreachable,
                              keyscan.scan_host_keys, '127.0.0.1',
                              closed_port())
        self.assertIn('127.0.0.1', str(e))

    def test_silent_server_times_out(self):
        server = self.server(silent=True)
        start = time.monotonic()
        e = self.assertRaises(exceptions.HostUnreachable,
                              keyscan.scan_host_keys, '127.0.0.1',
                              server.port, timeout=0.5)
        self.assertLess(time.monotonic() - start, 3.0)
        self.assertIn(str(server.port), str(e))

    def test_server_that_stops(self):
        server = self.server(key_kinds=('ed25519',))
        keyscan.scan_host_keys('127.0.0.1', server.port)
        server.stop()
        self.assertRaises(exceptions.HostUnreachable,
                          keyscan.scan_host_keys, '127.0.0.1', server.port)

    def test_winrm_only_checks_the_port(self):
        server = self.server(silent=True)
        self.assertEqual([], keyscan.scan_host_keys(
            '127.0.0.1', server.port, connection_type='winrm'))
        self.assertRaises(exceptions.HostUnreachable,
                          keyscan.scan_host_keys, '127.0.0.1', closed_port(),
                          connection_type='winrm')

    def test_network_cli_is_scanned(self):
        server = self.server(key_kinds=('ecdsa',))
        self.assertEqual(server.keys, keyscan.scan_host_keys(
            '127.0.0.1', server.port, connection_type='network_cli'))


class TestKeyScanner(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.log = self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        self.server = self.useFixture(ssh_fixture.SSHServerFixture(
            key_kinds=('ed25519', 'rsa')))
        self.scanner = keyscan.KeyScanner(workers=4, connect_timeout=5)
        self.addCleanup(self.scanner.stop)

    def test_scan(self):
        self.assertEqual(self.server.keys,
                         self.scanner.scan('127.0.0.1', self.server.port))

    def test_expected_keys_match(self):
        self.assertEqual(self.server.keys, self.scanner.scan(
            '127.0.0.1', self.server.port, expected_keys=self.server.keys))
        # a subset is enough, with a comment, and RSA under an rsa-sha2 name
        rsa = [k for k in self.server.keys if k.startswith('ssh-rsa ')][0]
        expected = ['rsa-sha2-512 %s host@example' % rsa.split()[1]]
        # only the expected keys are returned to be stored
        self.assertEqual([rsa], self.scanner.scan(
            '127.0.0.1', self.server.port, expected_keys=expected))

    def test_exact_expected_keys(self):
        self.assertEqual(self.server.keys, self.scanner.scan(
            '127.0.0.1', self.server.port, expected_keys=self.server.keys,
            exact=True))
        ed25519 = [k for k in self.server.keys if k.startswith('ssh-ed')]
        e = self.assertRaises(exceptions.HostKeyMismatch, self.scanner.scan,
                              '127.0.0.1', self.server.port,
                              expected_keys=ed25519, exact=True)
        self.assertIn('unexpected ssh-rsa', str(e))
        self.assertIn('SECURITY', self.log.output)

    def test_expected_keys_mismatch(self):
        other = ssh_fixture.public_key(
            ssh_fixture.host_key('ed25519', 'other'))
        e = self.assertRaises(exceptions.HostKeyMismatch, self.scanner.scan,
                              '127.0.0.1', self.server.port,
                              expected_keys=[other])
        message = str(e)
        self.assertIn('127.0.0.1:%d' % self.server.port, message)
        self.assertIn('ssh-ed25519', message)
        self.assertIn('ssh-rsa', message)
        self.assertIn(ssh.fingerprint(other), message)
        self.assertIn('SECURITY', self.log.output)
        self.assertIsInstance(e, exceptions.KeyscanError)

    def test_one_expected_key_missing(self):
        rsa = [k for k in self.server.keys if k.startswith('ssh-rsa ')]
        other = ssh_fixture.public_key(
            ssh_fixture.host_key('ecdsa', 'other'))
        e = self.assertRaises(exceptions.HostKeyMismatch, self.scanner.scan,
                              '127.0.0.1', self.server.port,
                              expected_keys=rsa + [other])
        self.assertIn('ecdsa-sha2-nistp256', str(e))

    def test_malformed_expected_key(self):
        self.assertRaises(exceptions.HostKeyMismatch, self.scanner.scan,
                          '127.0.0.1', self.server.port,
                          expected_keys=['ssh-ed25519'])

    def test_unreachable(self):
        self.assertRaises(exceptions.HostUnreachable, self.scanner.scan,
                          '127.0.0.1', closed_port())

    def test_bounded_concurrency(self):
        lock = threading.Lock()
        counts = {'running': 0, 'most': 0, 'calls': 0}
        # The first four scans meet here: they can only all arrive if four
        # threads really run at once.
        barrier = threading.Barrier(4, timeout=30)
        real = keyscan.scan_host_keys

        def counting(*args, **kwargs):
            with lock:
                counts['running'] += 1
                counts['calls'] += 1
                counts['most'] = max(counts['most'], counts['running'])
                call = counts['calls']
            try:
                if call <= 4:
                    barrier.wait()
                return real(*args, **kwargs)
            finally:
                with lock:
                    counts['running'] -= 1

        self.useFixture(fixtures.MockPatchObject(
            keyscan, 'scan_host_keys', counting))
        with concurrent.futures.ThreadPoolExecutor(50) as callers:
            results = list(callers.map(
                lambda _: self.scanner.scan('127.0.0.1', self.server.port),
                range(50)))
        self.assertEqual([self.server.keys] * 50, results)
        self.assertEqual(50, counts['calls'])
        self.assertEqual(4, counts['most'])
        self.assertEqual(0, counts['running'])

    def test_stop(self):
        self.scanner.stop()
        self.assertRaises(RuntimeError, self.scanner.scan, '127.0.0.1',
                          self.server.port)


class TestRelay(testtools.TestCase):
    """A relay answers for the key types a host was not pinned to."""

    def setUp(self):
        super().setUp()
        self.log = self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        client_key, self.client_pem = ssh_fixture.client_key()
        self.real = self.useFixture(ssh_fixture.SSHServerFixture(
            key_kinds=('ed25519', 'ecdsa', 'rsa'), key_set='real',
            authorized_keys=[ssh_fixture.public_key(client_key)]))
        self.attacker = self.useFixture(ssh_fixture.SSHServerFixture(
            key_kinds=('ecdsa', 'rsa'), key_set='attacker',
            authorized_keys=[ssh_fixture.public_key(client_key)]))
        self.relay = self.useFixture(ssh_fixture.SSHRelayFixture(
            self.real.port, self.attacker.port))
        self.scanner = keyscan.KeyScanner(workers=2, connect_timeout=5)
        self.addCleanup(self.scanner.stop)

    def pinned(self):
        return [k for k in self.real.keys if k.startswith('ssh-ed25519 ')]

    def test_only_the_pinned_key_is_stored(self):
        offered = keyscan.scan_host_keys('127.0.0.1', self.relay.port)
        # the relay really does mix the real key with the attacker's
        self.assertEqual(sorted(self.pinned() + self.attacker.keys), offered)
        stored = self.scanner.scan('127.0.0.1', self.relay.port,
                                   expected_keys=self.pinned())
        self.assertEqual(self.pinned(), stored)
        self.assertIn('not storing host keys nobody expected',
                      self.log.output)
        # a consumer of the stored keys reaches the real host only
        client = ssh.connect('127.0.0.1', self.relay.port,
                             self.real.username, stored,
                             pkey=ssh_fixture.client_key()[0])
        try:
            presented = client.get_transport().get_remote_server_key()
            self.assertEqual(self.pinned(), [ssh.key_string(presented)])
        finally:
            client.close()
        self.assertEqual('real', self.relay.routes[-1])

    def test_exact_keys_refuse_the_relay(self):
        e = self.assertRaises(exceptions.HostKeyMismatch, self.scanner.scan,
                              '127.0.0.1', self.relay.port,
                              expected_keys=self.pinned(), exact=True)
        for key in self.attacker.keys:
            self.assertIn(ssh.fingerprint(key), str(e))
        self.assertIn('SECURITY: host key mismatch', self.log.output)
