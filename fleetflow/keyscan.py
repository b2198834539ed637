"""SSH keyscan: which host keys does a node present?

:func:`scan_host_keys` makes one scan: it negotiates SSH once to learn the
host key algorithms the server offers (and its preferred key), then once
more for every other key type it offers, restricting the algorithms this
side accepts to that type, so that every key is collected, each proven by
a completed key exchange. It never authenticates.

A scan is one attempt. A node that is still booting makes it raise
:class:`~fleetflow.exceptions.HostUnreachable`; retrying until the boot
timeout is the launch flow's retry controller's job, not this module's.

:class:`KeyScanner` runs scans on a bounded pool of threads, so that
hundreds of booting nodes share ``[keyscan] workers`` threads, and compares
what it found with the keys a node is expected to present.
"""

from concurrent import futures
import logging
import socket

import paramiko

from fleetflow import exceptions
from fleetflow import ssh

LOG = logging.getLogger(__name__)

#: connection types whose hosts are scanned; others only get a port check
SSH_CONNECTION_TYPES = ('ssh', 'network_cli')

#: key types, most preferred first, with the host key algorithms that
#: negotiate them
KEY_TYPES = (
    ('ssh-ed25519', ('ssh-ed25519',)),
    ('ecdsa-sha2-nistp256', ('ecdsa-sha2-nistp256',)),
    ('ecdsa-sha2-nistp384', ('ecdsa-sha2-nistp384',)),
    ('ecdsa-sha2-nistp521', ('ecdsa-sha2-nistp521',)),
    ('ssh-rsa', ssh.RSA_ALGORITHMS),
)

# paramiko logs every failed negotiation (a booting node fails many) with a
# traceback at ERROR; scans report their failures themselves.
_TRANSPORT_LOG = __name__ + '.transport'
logging.getLogger(_TRANSPORT_LOG).setLevel(logging.CRITICAL)


def _supported(algorithms):
    return tuple(a for a in algorithms if a in paramiko.Transport._key_info)


class _Transport(paramiko.Transport):
    """A client transport that records the server's host key algorithms."""

    offered_key_algorithms = None

    def _parse_kex_init(self, m):
        if self.offered_key_algorithms is None:
            # Read a copy of the server's KEXINIT: a 16 byte cookie, the kex
            # algorithms, then the host key algorithms.
            try:
                copy = paramiko.Message(m.asbytes())
                copy.get_bytes(16)
                copy.get_list()
                self.offered_key_algorithms = tuple(copy.get_list())
            except Exception:  # an odd packet: the real parser will say
                pass
        return super()._parse_kex_init(m)


def _connect(host, port, timeout):
    try:
        return socket.create_connection((host, int(port)), timeout=timeout)
    except socket.timeout:
        raise exceptions.HostUnreachable(
            '%s:%s: connection timed out after %ss' % (host, port, timeout))
    except OSError as e:
        raise exceptions.HostUnreachable(
            '%s:%s: %s' % (host, port, e.strerror or e))


def _negotiate(host, port, algorithms, timeout):
    """Negotiate once, accepting only ``algorithms`` for the host key.

    :returns: (the server's offered host key algorithms or None, its key)
    :raises paramiko.IncompatiblePeer: the server has none of them.
    :raises HostUnreachable: no answer, no banner, or negotiation cut off.
    """
    sock = _connect(host, port, timeout)
    transport = None
    try:
        transport = _Transport(sock)
        transport.set_log_channel(_TRANSPORT_LOG)
        transport.banner_timeout = timeout
        transport.handshake_timeout = timeout
        transport.get_security_options().key_types = list(algorithms)
        try:
            transport.start_client(timeout=timeout)
        except paramiko.IncompatiblePeer:
            raise
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise exceptions.HostUnreachable(
                '%s:%s: SSH negotiation failed: %s' % (host, port, e))
        if not transport.is_active() or transport.host_key is None:
            raise exceptions.HostUnreachable(
                '%s:%s: SSH negotiation did not finish in %ss'
                % (host, port, timeout))
        return transport.offered_key_algorithms, transport.host_key
    finally:
        if transport is not None:
            transport.close()
        sock.close()


def check_port(host, port, timeout=5.0):
    """Whether a TCP connection to host:port succeeds.

    :raises HostUnreachable: when it does not.
    """
    _connect(host, port, timeout).close()


def scan_host_keys(host, port, connection_type='ssh', timeout=5.0):
    """Return every host key the server at host:port offers.

    :param connection_type: ``ssh`` and ``network_cli`` hosts are scanned;
        for any other type (``winrm``) only the TCP port is checked and
        ``[]`` returned.
    :param timeout: seconds each connection may take, banner and key
        exchange included.
    :returns: a sorted list of ``"type base64"`` strings, one per key type
        (RSA reported once, as ``ssh-rsa``).
    :raises HostUnreachable: refused, unreachable, timed out, no banner.
    :raises KeyscanError: the server offers no host key algorithm that
        fleetflow supports.
    """
    if connection_type not in SSH_CONNECTION_TYPES:
        check_port(host, port, timeout)
        return []
    key_types = [(key_type, _supported(algorithms))
                 for key_type, algorithms in KEY_TYPES]
    key_types = [(t, a) for t, a in key_types if a]
    try:
        offered, key = _negotiate(
            host, port, [a for _, algs in key_types for a in algs], timeout)
    except paramiko.IncompatiblePeer as e:
        raise exceptions.KeyscanError(
            '%s:%s offers no host key algorithm fleetflow supports: %s'
            % (host, port, e))
    keys = {ssh.key_string(key)}
    found = {ssh.normalize_type(key.get_name())}
    for key_type, algorithms in key_types:
        if key_type in found:
            continue
        if offered is not None:
            algorithms = [a for a in algorithms if a in offered]
            if not algorithms:
                continue
        try:
            _, key = _negotiate(host, port, algorithms, timeout)
        except paramiko.IncompatiblePeer:
            continue
        keys.add(ssh.key_string(key))
        found.add(key_type)
    LOG.debug('%s:%s offers host keys of types %s',
              host, port, ', '.join(sorted(found)))
    return sorted(keys)


def verify_host_keys(host, port, keys, expected_keys, exact=False):
    """Check the scanned ``keys`` against the expected ones.

    Every expected key must be among ``keys``. With ``exact`` (a host whose
    every key is known, as a local instance's) any other key is a mismatch
    too; without it the other keys are left out: a host pinned to some of
    its keys is known by those alone, so a relay that answers for the other
    key types cannot plant its own. Key types are compared with
    ``rsa-sha2-*`` and ``ssh-rsa`` as one.

    :returns: the keys to store: the expected ones, sorted ``"type base64"``.
    :raises HostKeyMismatch: naming the host and the key types, logged at
        ERROR as a security event.
    """
    try:
        expected = ssh.key_set(expected_keys)
    except ValueError as e:
        raise exceptions.HostKeyMismatch(
            'expected host key of %s:%s is not valid: %s' % (host, port, e))
    offered = ssh.key_set(keys)
    missing = expected - offered
    unexpected = offered - expected

    def describe(pairs):
        return ', '.join('%s %s' % (t, ssh.fingerprint('%s %s' % (t, d)))
                         for t, d in sorted(pairs)) or 'none'

    if not missing and not (exact and unexpected):
        if unexpected:
            LOG.info('%s:%s: not storing host keys nobody expected: %s',
                     host, port, describe(unexpected))
        return sorted('%s %s' % pair for pair in expected)
    problems = []
    if missing:
        problems.append('expected %s not offered' % describe(missing))
    if exact and unexpected:
        problems.append('unexpected %s offered' % describe(unexpected))
    message = ('host key mismatch for %s:%s: expected key types %s, '
               'offered key types %s; %s (offered %s)'
               % (host, port,
                  ', '.join(sorted({t for t, _ in expected})),
                  ', '.join(sorted({t for t, _ in offered})) or 'none',
                  '; '.join(problems), describe(offered)))
    LOG.error('SECURITY: %s', message)
    raise exceptions.HostKeyMismatch(message)


class KeyScanner:
    """Runs scans on a bounded pool of threads.

    :param workers: scans run at once; more wait for a free thread.
    :param connect_timeout: seconds each connection of a scan may take.
    """

    def __init__(self, workers=16, connect_timeout=5.0):
        self.workers = workers
        self.connect_timeout = connect_timeout
        self._executor = futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix='fleetflow-keyscan')

    @classmethod
    def from_conf(cls, conf):
        """A scanner sized by the ``[keyscan]`` options."""
        return cls(workers=conf.keyscan.workers,
                   connect_timeout=conf.keyscan.connect_timeout)

    def submit(self, host, port, connection_type='ssh'):
        """Queue a scan; return a future of its keys."""
        return self._executor.submit(self._scan, host, port, connection_type)

    def _scan(self, host, port, connection_type):
        return scan_host_keys(host, port, connection_type,
                              timeout=self.connect_timeout)

    def scan(self, host, port, connection_type='ssh', expected_keys=None,
             exact=False):
        """Scan host:port on the pool and wait for its keys.

        :param expected_keys: ``"type base64"`` keys the host must present
            (all of them); ``None`` or empty to accept whatever it has.
            Not checked for connection types that are not scanned.
        :param exact: the expected keys are all the host has; any other
            key offered is a mismatch.
        :returns: the sorted ``"type base64"`` keys to store: the expected
            ones when there are, else every key found.
        :raises HostUnreachable: SSH does not answer (yet).
        :raises HostKeyMismatch: an expected key was not presented, or
            (``exact``) another was.
        """
        keys = self.submit(host, port, connection_type).result()
        if expected_keys and connection_type in SSH_CONNECTION_TYPES:
            return verify_host_keys(host, port, keys, expected_keys, exact)
        return keys

    def stop(self, wait=True):
        """Shut the pool down."""
        self._executor.shutdown(wait=wait)
