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

:class:`SSHRelayFixture` is a man in the middle that relays some key
exchanges to a real host and answers the others with its own keys.
"""

import functools
import getpass
import socket
import threading

import fixtures
import paramiko

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
        sock = local_server.bind_loopback(self.port or 0, reuse=True)
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


def _read_line(sock):
    """One ``\\n`` ended line from a socket, not a byte more."""
    line = b''
    while not line.endswith(b'\n'):
        byte = sock.recv(1)
        if not byte:
            raise EOFError('connection closed in a banner')
        line += byte
    return line


def _read_exactly(sock, size):
    data = b''
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError('connection closed in a packet')
        data += chunk
    return data


def _pipe(source, sink):
    try:
        for chunk in iter(lambda: source.recv(65536), b''):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class SSHRelayFixture(fixtures.Fixture):
    """A man in the middle on a loopback port, in front of a real host.

    A client whose key exchange accepts a host key algorithm in
    ``relayed`` (a key type the relay has no key of) is relayed to
    ``real_port``, unchanged; any other client is answered by the server
    on ``attacker_port``, with its own host keys. Both servers must send
    the same banner (the fixture's servers do). :attr:`routes` lists where
    each connection went.
    """

    def __init__(self, real_port, attacker_port, relayed=('ssh-ed25519',)):
        super().__init__()
        self.real_port = real_port
        self.attacker_port = attacker_port
        self.relayed = set(relayed)
        self.routes = []

    def _setUp(self):
        self.sock = socket.create_server(('127.0.0.1', 0))
        self.port = self.sock.getsockname()[1]
        self._sockets = [self.sock]
        self.addCleanup(self._close)
        threading.Thread(target=self._serve, daemon=True).start()

    def _close(self):
        for sock in list(self._sockets):
            sock.close()

    def _connect(self, port):
        sock = socket.create_connection(('127.0.0.1', port))
        self._sockets.append(sock)
        return sock

    def _serve(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self._sockets.append(client)
            threading.Thread(target=self._relay, args=(client,),
                             daemon=True).start()

    def _relay(self, client):
        try:
            real = self._connect(self.real_port)
            banner = _read_line(real)
            client.sendall(banner)
            client_banner = _read_line(client)
            header = _read_exactly(client, 4)
            packet = header + _read_exactly(
                client, int.from_bytes(header, 'big'))
            message = paramiko.Message(packet[5:])
            message.get_byte()  # KEXINIT
            message.get_bytes(16)
            message.get_list()
            algorithms = set(message.get_list())
            if algorithms & self.relayed:
                backend, route = real, 'real'
            else:
                real.close()
                backend, route = self._connect(self.attacker_port), 'attacker'
                if _read_line(backend) != banner:
                    raise EOFError('the servers send different banners')
            self.routes.append(route)
            backend.sendall(client_banner + packet)
        except (OSError, EOFError):
            client.close()
            return
        threading.Thread(target=_pipe, args=(backend, client),
                         daemon=True).start()
        _pipe(client, backend)
