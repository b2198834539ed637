"""The SSH server behind one instance of the ``local`` driver.

Run as ``python -m fleetflow.drivers.local_server --directory DIR ...`` by
:class:`fleetflow.drivers.local.LocalDriver`, one process per instance, in
its own session. The process "boots" like a cloud server does:

1. it writes ``server.pid`` and binds a TCP socket on 127.0.0.1 port 0 (the
   kernel picks a free port, and without ``SO_REUSEADDR`` no other socket
   can bind it too), and writes that port to ``port``; the socket does not
   listen yet, so a connection is refused, as by a server whose sshd has
   not started;
2. it generates fresh host keys (``ssh_host_<type>_key`` and ``.pub``);
3. it sleeps the boot delay, then listens.

It accepts only public-key authentication, for one user name and the keys
in ``authorized_keys``; never passwords, never "none". It runs ``exec``
requests with ``/bin/sh -c`` in ``DIR/home``, streams stdout and stderr
back and sends the exit status. It exits when its directory disappears.

The classes here are also used by the tests' SSH server fixture.
"""

import argparse
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives import serialization
import paramiko

from fleetflow import ssh

LOG = logging.getLogger(__name__)

PID_FILE = 'server.pid'
PORT_FILE = 'port'
AUTHORIZED_KEYS_FILE = 'authorized_keys'
HOME_DIR = 'home'

#: host key kinds this server can generate
HOST_KEY_KINDS = {
    'ed25519': (lambda: ed25519.Ed25519PrivateKey.generate(),
                paramiko.Ed25519Key),
    'ecdsa': (lambda: ec.generate_private_key(ec.SECP256R1()),
              paramiko.ECDSAKey),
    'ecdsa384': (lambda: ec.generate_private_key(ec.SECP384R1()),
                 paramiko.ECDSAKey),
    'ecdsa521': (lambda: ec.generate_private_key(ec.SECP521R1()),
                 paramiko.ECDSAKey),
    'rsa': (lambda bits: rsa.generate_private_key(65537, bits),
            paramiko.RSAKey),
}
RSA_BITS = 3072
DEFAULT_HOST_KEY_KINDS = ('ed25519', 'ecdsa', 'rsa')


def write_atomic(path, text, mode=0o600):
    """Write ``text`` to ``path`` so that readers never see half of it.

    The file has ``mode`` from its creation on.
    """
    tmp = '%s.tmp.%d.%d' % (path, os.getpid(), threading.get_ident())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def generate_host_key(kind, rsa_bits=RSA_BITS):
    """Generate a host key; return (paramiko key, OpenSSH private PEM)."""
    generate, key_class = HOST_KEY_KINDS[kind]
    private = generate(rsa_bits) if kind == 'rsa' else generate()
    pem = private.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    return key_class(file_obj=io.StringIO(pem)), pem


def generate_host_keys(directory, kinds=DEFAULT_HOST_KEY_KINDS):
    """Generate host keys into ``directory``; return the paramiko keys."""
    keys = []
    for kind in kinds:
        key, pem = generate_host_key(kind)
        path = os.path.join(directory, 'ssh_host_%s_key' % kind)
        write_atomic(path, pem, mode=0o600)
        write_atomic(path + '.pub', ssh.key_string(key) + '\n')
        keys.append(key)
    return keys


def read_public_keys(text):
    """Return the ``"type base64"`` keys of an authorized_keys text.

    Blank lines and comments are skipped; key options are not supported.
    """
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith('#'):
            keys.append('%s %s' % ssh.parse_key(line))
    return keys


#: how long after accepting an exec request its channel is closed at the
#: soonest (see :meth:`CommandRunner.run`)
REPLY_GRACE = 0.2


class CommandRunner(threading.Thread):
    """Runs one exec request and streams its output to the channel."""

    def __init__(self, channel, command, cwd, env):
        super().__init__(daemon=True, name='exec-%s' % channel.get_id())
        self.accepted = time.monotonic()
        self.channel = channel
        self.command = command
        self.cwd = cwd
        self.env = env

    def _pump_out(self, pipe, send):
        try:
            for chunk in iter(lambda: pipe.read1(65536), b''):
                send(chunk)
        except (OSError, EOFError, paramiko.SSHException) as e:
            LOG.debug('output of %r lost: %s', self.command, e)
        finally:
            pipe.close()

    def _pump_in(self, pipe):
        try:
            for chunk in iter(lambda: self.channel.recv(65536), b''):
                pipe.write(chunk)
                pipe.flush()
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            try:
                pipe.close()
            except OSError:
                pass

    def run(self):
        command = self.command.decode('utf-8', 'replace') \
            if isinstance(self.command, bytes) else self.command
        LOG.info('exec %r', command)
        status = 255
        try:
            proc = subprocess.Popen(['/bin/sh', '-c', command], cwd=self.cwd,
                                    env=self.env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        except OSError as e:
            self.channel.sendall_stderr(('cannot run: %s\n' % e).encode())
        else:
            threading.Thread(target=self._pump_in, args=(proc.stdin,),
                             daemon=True).start()
            pumps = [threading.Thread(target=self._pump_out, args=args,
                                      daemon=True)
                     for args in ((proc.stdout, self.channel.sendall),
                                  (proc.stderr,
                                   self.channel.sendall_stderr))]
            for pump in pumps:
                pump.start()
            status = proc.wait()
            for pump in pumps:
                pump.join()
            LOG.info('exec %r exited %d', command, status)
        # paramiko replies to the exec request on the transport's thread
        # once check_channel_exec_request returned, and has no hook for
        # after it: a command done at once would close the channel before
        # that reply, which the client takes for a refusal.
        time.sleep(max(0.0, self.accepted + REPLY_GRACE - time.monotonic()))
        try:
            self.channel.send_exit_status(status if status >= 0 else 255)
            self.channel.shutdown_write()
            self.channel.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass


class ServerInterface(paramiko.ServerInterface):
    """Public-key authentication for one user, and exec requests.

    :param username: the only user name accepted.
    :param authorized_keys: ``"type base64"`` keys accepted for it.
    :param cwd: where commands run; ``None`` refuses exec requests.
    """

    def __init__(self, username, authorized_keys, cwd=None, env=None,
                 peer=None):
        self.username = username
        self.authorized = ssh.key_set(authorized_keys)
        self.cwd = cwd
        self.env = env
        self.peer = peer

    def get_allowed_auths(self, username):
        return 'publickey'

    def check_auth_none(self, username):
        return paramiko.AUTH_FAILED

    def check_auth_password(self, username, password):
        LOG.warning('%s: password authentication refused for %r',
                    self.peer, username)
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username, key):
        if username == self.username and \
                ssh.parse_key(ssh.key_string(key)) in self.authorized:
            LOG.info('%s: accepted %s key %s for %r', self.peer,
                     key.get_name(), key.fingerprint, username)
            return paramiko.AUTH_SUCCESSFUL
        LOG.info('%s: refused %s key %s for %r', self.peer,
                 key.get_name(), key.fingerprint, username)
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        if kind == 'session':
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel, command):
        if self.cwd is None:
            return False
        CommandRunner(channel, command, self.cwd, self.env).start()
        return True


class Listener:
    """Serves SSH on a bound socket, one transport per connection.

    :param sock: a bound TCP socket; :meth:`listen` starts listening.
    :param host_keys: the paramiko private keys the server presents.
    :param make_interface: called with the peer address, returns the
        :class:`paramiko.ServerInterface` for that connection.
    :param silent: accept connections but never answer (no banner).
    """

    def __init__(self, sock, host_keys, make_interface, silent=False,
                 timeout=30.0):
        self.sock = sock
        self.host_keys = list(host_keys)
        self.make_interface = make_interface
        self.silent = silent
        self.timeout = timeout
        self._lock = threading.Lock()
        self._connections = set()
        self._closed = threading.Event()
        self._thread = None

    @property
    def port(self):
        return self.sock.getsockname()[1]

    def listen(self, backlog=128):
        self.sock.settimeout(0.2)
        self.sock.listen(backlog)
        self._thread = threading.Thread(target=self.serve, daemon=True,
                                        name='ssh-listener-%d' % self.port)
        self._thread.start()

    def serve(self):
        while not self._closed.is_set():
            try:
                conn, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._closed.is_set():
                    break
                raise
            conn.settimeout(None)
            with self._lock:
                if self._closed.is_set():
                    conn.close()
                    break
                self._connections = {c for c in self._connections
                                     if self._open(c)}
                self._connections.add(conn)
            if not self.silent:
                threading.Thread(target=self._handle, args=(conn, peer),
                                 daemon=True).start()

    @staticmethod
    def _open(conn):
        if isinstance(conn, paramiko.Transport):
            return conn.is_active()
        return conn.fileno() != -1

    def _handle(self, conn, peer):
        transport = paramiko.Transport(conn)
        with self._lock:
            self._connections.add(transport)
        for key in self.host_keys:
            transport.add_server_key(key)
        transport.banner_timeout = self.timeout
        transport.handshake_timeout = self.timeout
        transport.auth_timeout = self.timeout
        try:
            transport.start_server(
                server=self.make_interface('%s:%s' % peer[:2]))
        except (paramiko.SSHException, EOFError, OSError) as e:
            LOG.debug('%s:%s: negotiation ended: %s', peer[0], peer[1], e)
            transport.close()

    def close(self):
        """Stop listening and drop every connection."""
        self._closed.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            try:
                conn.close()
            except (OSError, EOFError):
                pass
        if self._thread is not None and \
                self._thread is not threading.current_thread():
            self._thread.join(5)


def bind_loopback(port=0, reuse=False):
    """A TCP socket bound (not listening) on 127.0.0.1.

    Without ``reuse``, the port is bound without ``SO_REUSEADDR``, so that
    no other socket, of any local user, can bind it too before this one
    listens. ``reuse`` is for a test server that answers again on its old
    port, past its closed connections.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reuse:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(('127.0.0.1', port))
    return sock


def command_environment(home, username):
    """The environment commands run with: not the launcher's."""
    return {'PATH': os.environ.get('PATH', '/usr/local/bin:/usr/bin:/bin'),
            'LANG': os.environ.get('LANG', 'C.UTF-8'),
            'HOME': home, 'USER': username, 'LOGNAME': username,
            'SHELL': '/bin/sh'}


def _watch_directory(directory, interval=2.0):
    """Exit, with every command started, once the directory is gone."""
    while True:
        time.sleep(interval)
        if not os.path.isdir(directory):
            LOG.warning('%s is gone; stopping', directory)
            os.killpg(os.getpgrp(), signal.SIGKILL)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='fleetflow.drivers.local_server',
        description='SSH server of one local fleetflow instance.')
    parser.add_argument('--directory', required=True)
    parser.add_argument('--username', required=True)
    parser.add_argument('--boot-delay', type=float, default=0.0)
    parser.add_argument('--host-key-types',
                        default=','.join(DEFAULT_HOST_KEY_KINDS),
                        help='comma separated: %s'
                             % ', '.join(sorted(HOST_KEY_KINDS)))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format='%(asctime)s %(process)d %(levelname)s %(name)s %(message)s')
    logging.getLogger('paramiko').setLevel(logging.WARNING)
    directory = os.path.abspath(args.directory)
    home = os.path.join(directory, HOME_DIR)
    os.makedirs(home, exist_ok=True)
    write_atomic(os.path.join(directory, PID_FILE), '%d\n' % os.getpid())
    threading.Thread(target=_watch_directory, args=(directory,),
                     daemon=True).start()

    sock = bind_loopback()
    port = sock.getsockname()[1]
    write_atomic(os.path.join(directory, PORT_FILE), '%d\n' % port)
    LOG.info('booting on 127.0.0.1:%d', port)
    kinds = [k.strip() for k in args.host_key_types.split(',') if k.strip()]
    host_keys = generate_host_keys(directory, kinds)
    with open(os.path.join(directory, AUTHORIZED_KEYS_FILE)) as f:
        authorized = read_public_keys(f.read())
    env = command_environment(home, args.username)
    if args.boot_delay > 0:
        time.sleep(args.boot_delay)

    listener = Listener(
        sock, host_keys,
        lambda peer: ServerInterface(args.username, authorized, cwd=home,
                                     env=env, peer=peer))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stopping.set())
    listener.listen()
    LOG.info('listening on 127.0.0.1:%d for user %r, host keys: %s', port,
             args.username, ', '.join(ssh.key_string(k).split()[0]
                                      for k in host_keys))
    while not stopping.wait(1.0):
        pass
    LOG.info('stopping')
    listener.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
