"""A real SSH server on a loopback port, for tests.

The server is paramiko's, served from a thread of the test process by the
same classes the ``local`` driver's server process uses. It has its own
host keys (any of ed25519, ecdsa, ecdsa384, ecdsa521, rsa), accepts public
key authentication for the keys it is given, runs exec requests in a
directory of its own, and can:

- listen late: the port is bound at once (so it is known and reserved) but
  connections are refused until :meth:`SSHServerFixture.listen` (or until
  ``listen_delay`` seconds have passed);
- be silent: accept TCP connections and never send a banner;
- stop answering (:meth:`stop`) and answer again on the same port
  (:meth:`start`), optionally with new host keys.
"""

import functools
import getpass
import threading

import fixtures

from fleetflow.drivers import local_server
from fleetflow import ssh


@functools.lru_cache(maxsize=None)
def _shared_key(kind, name):
    # 2048 bit RSA: as good a test, in a fraction of the time
    return local_server.generate_host_key(kind, rsa_bits=2048)


def host_key(kind, name='default'):
    """A host key of ``kind``, generated once per (kind, name) per run."""
    return _shared_key(kind, name)[0]


def client_key(name='client'):
    """``(paramiko key, OpenSSH private key text)`` of an ed25519 key."""
    return _shared_key('ed25519', 'client-' + name)


def public_key(key):
    """``"type base64"`` of a paramiko key."""
    return ssh.key_string(key)


class SSHServerFixture(fixtures.Fixture):
    """An SSH server on 127.0.0.1.

    :param key_kinds: host key kinds the server has.
    :param key_set: a name picking one shared set of host keys; use a new
        name for keys no other server has.
    :param listen_delay: 0 to listen at once, seconds to listen after a
        delay, ``None`` to listen only when :meth:`listen` is called.
    :param silent: accept connections but never send a banner.
    :param authorized_keys: ``"type base64"`` keys that may log in.
    :param username: the user they may log in as (default: current user).
    """

    def __init__(self, key_kinds=('ed25519', 'ecdsa', 'rsa'),
                 key_set='default', listen_delay=0, silent=False,
                 authorized_keys=(), username=None):
        super().__init__()
        self.key_kinds = tuple(key_kinds)
        self.key_set = key_set
        self.listen_delay = listen_delay
        self.silent = silent
        self.authorized_keys = list(authorized_keys)
        self.username = username or getpass.getuser()
        self.port = None
        self.listener = None

    def _setUp(self):
        self.directory = self.useFixture(fixtures.TempDir()).path
        self.host_keys = [host_key(kind, self.key_set)
                          for kind in self.key_kinds]
        self.addCleanup(self.stop)
        self._bind()
        if self.listen_delay == 0:
            self.listen()
        elif self.listen_delay is not None:
            timer = threading.Timer(self.listen_delay, self.listen)
            timer.daemon = True
            timer.start()
            self.addCleanup(timer.cancel)

    @property
    def keys(self):
        """The sorted ``"type base64"`` host keys it presents."""
        return sorted(ssh.key_string(k) for k in self.host_keys)

    def _bind(self):
        sock = local_server.bind_loopback(self.port or 0)
        self.port = sock.getsockname()[1]
        env = local_server.command_environment(self.directory,
                                               self.username)
        self.listener = local_server.Listener(
            sock, self.host_keys,
            lambda peer: local_server.ServerInterface(
                self.username, self.authorized_keys, cwd=self.directory,
                env=env, peer=peer),
            silent=self.silent)

    def listen(self):
        """Start answering on the bound port."""
        self.listener.listen()

    def stop(self):
        """Stop answering: close the port and every connection."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def start(self, key_set=None):
        """Answer again on the same port, with new host keys if asked."""
        self.stop()
        if key_set is not None:
            self.key_set = key_set
            self.host_keys = [host_key(kind, key_set)
                              for kind in self.key_kinds]
        self._bind()
        self.listen()
