"""SSH helpers shared by keyscan and the drivers.

Host keys travel through fleetflow as ``"type base64"`` strings, the shape
of a known_hosts line without its host field. RSA keys are reported as
``ssh-rsa`` whatever signature algorithm (``rsa-sha2-512``,
``rsa-sha2-256``) was negotiated, since the key is the same.

:func:`connect` is the one way fleetflow opens an SSH session to a node:
strict host key checking (``RejectPolicy``) against the keys it was given,
and only the host key algorithms of those keys are offered, so a host that
presents any other key is refused.
"""

import base64
import hashlib
import logging
import os
import select
import time

import paramiko

from fleetflow import exceptions

LOG = logging.getLogger(__name__)

RSA_ALGORITHMS = ('rsa-sha2-512', 'rsa-sha2-256')
#: bytes of a command's stdout, and of its stderr, that :func:`run` keeps
MAX_OUTPUT = 1024 * 1024


def normalize_type(key_type):
    """The key type of a host key algorithm (``rsa-sha2-*`` -> ssh-rsa)."""
    if key_type in RSA_ALGORITHMS:
        return 'ssh-rsa'
    return key_type


def parse_key(text):
    """Split ``"type base64 [comment]"`` into ``(type, base64)``.

    The type is normalised with :func:`normalize_type`.

    :raises ValueError: when the text is not a public key line.
    """
    fields = text.split() if isinstance(text, str) else []
    if len(fields) < 2:
        raise ValueError('not a public key: %r' % (text,))
    key_type, data = fields[0], fields[1]
    try:
        base64.b64decode(data, validate=True)
    except ValueError:
        raise ValueError('not a public key (bad base64): %r' % (text,))
    return normalize_type(key_type), data


def key_string(key):
    """``"type base64"`` for a paramiko key."""
    return '%s %s' % (normalize_type(key.get_name()), key.get_base64())


def key_set(keys):
    """The set of ``(type, base64)`` pairs of an iterable of key strings."""
    if isinstance(keys, str):
        keys = [keys]
    return {parse_key(k) for k in keys or ()}


def fingerprint(key_text):
    """OpenSSH's ``SHA256:...`` fingerprint of a ``"type base64"`` key."""
    _, data = parse_key(key_text)
    digest = hashlib.sha256(base64.b64decode(data)).digest()
    return 'SHA256:' + base64.b64encode(digest).decode().rstrip('=')


def load_public_key(text):
    """A paramiko public key from ``"type base64"``."""
    key_type, data = parse_key(text)
    return paramiko.PKey.from_type_string(key_type, base64.b64decode(data))


def load_private_key(pkey):
    """A paramiko private key from a key object or a file path."""
    if pkey is None or isinstance(pkey, paramiko.PKey):
        return pkey
    return paramiko.PKey.from_path(os.path.expanduser(pkey))


def known_host_name(host, port):
    """The name a host is known by in known_hosts (and in paramiko)."""
    port = int(port)
    return host if port == 22 else '[%s]:%d' % (host, port)


def connect(host, port, username, host_keys, pkey=None, timeout=10.0,
            allow_agent=False, look_for_keys=False):
    """Open an SSH client with strict host key checking.

    :param host_keys: the host's known keys, ``"type base64"`` strings;
        the server must present one of them (``RejectPolicy``), and only
        their algorithms are negotiated.
    :param pkey: a paramiko private key, or a path to one, to log in with.
    :param allow_agent: also try keys from an SSH agent.
    :param look_for_keys: also try ``~/.ssh/id_*``.
    :returns: a connected :class:`paramiko.SSHClient`; close it when done.
    :raises KeyscanError: when no known host key is given.
    :raises paramiko.BadHostKeyException: when the host presents a key
        other than the known ones.
    """
    known = key_set(host_keys)
    if not known:
        raise exceptions.KeyscanError(
            'no known host key for %s:%s; refusing to connect' % (host, port))
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    name = known_host_name(host, port)
    for key_type, data in sorted(known):
        client.get_host_keys().add(
            name, key_type, load_public_key('%s %s' % (key_type, data)))
    known_types = {key_type for key_type, _ in known}
    disabled = [algorithm for algorithm in paramiko.Transport._preferred_keys
                if normalize_type(algorithm) not in known_types]
    try:
        client.connect(host, port=int(port), username=username,
                       pkey=load_private_key(pkey), timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout,
                       allow_agent=allow_agent, look_for_keys=look_for_keys,
                       disabled_algorithms={'keys': disabled})
    except BaseException:
        client.close()
        raise
    return client


class _Capped:
    """The first ``limit`` bytes of a stream; the rest is read and dropped."""

    def __init__(self, limit):
        self.limit = limit
        self.chunks = []
        self.kept = self.dropped = 0

    def add(self, data):
        keep = data[:max(0, self.limit - self.kept)]
        if keep:
            self.chunks.append(keep)
            self.kept += len(keep)
        self.dropped += len(data) - len(keep)

    def value(self):
        return b''.join(self.chunks)


def run(client, command, timeout=60.0, max_output=MAX_OUTPUT):
    """Run ``command`` on a connected client; return (status, out, err).

    stdout and stderr are read as they come, so a command that writes a lot
    to either does not stall; of each, the first ``max_output`` bytes are
    kept (a warning says how much was dropped). ``status`` is the exit
    status (-1 when the server sent none).

    :raises TimeoutError: when the command does not finish in ``timeout``.
    """
    deadline = time.monotonic() + timeout
    channel = client.get_transport().open_session(timeout=timeout)
    try:
        channel.exec_command(command)
        channel.shutdown_write()
        out, err = _Capped(max_output), _Capped(max_output)
        while True:
            if channel.recv_ready():
                out.add(channel.recv(65536))
            elif channel.recv_stderr_ready():
                err.add(channel.recv_stderr(65536))
            elif channel.exit_status_ready() or channel.closed:
                break
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError('%r did not finish in %ss'
                                       % (command, timeout))
                select.select([channel], [], [], min(remaining, 0.2))
        # The exit status comes after the data; drain what arrived with it.
        while channel.recv_ready():
            out.add(channel.recv(65536))
        while channel.recv_stderr_ready():
            err.add(channel.recv_stderr(65536))
        status = channel.recv_exit_status() if channel.exit_status_ready() \
            else -1
        for name, stream in (('stdout', out), ('stderr', err)):
            if stream.dropped:
                LOG.warning('%r: kept the first %d bytes of its %s, dropped '
                            '%d', command, stream.kept, name, stream.dropped)
        return status, out.value(), err.value()
    finally:
        channel.close()


def run_command(host, port, username, pkey, host_keys, command,
                timeout=60.0):
    """Connect with strict host key checking and run one command.

    :returns: ``(exit_status, stdout_bytes, stderr_bytes)``
    """
    client = connect(host, port, username, host_keys, pkey=pkey,
                     timeout=timeout)
    try:
        return run(client, command, timeout=timeout)
    finally:
        client.close()
