"""The ``local`` driver: every instance is an SSH server process on 127.0.0.1.

The embedded default: it lets a newcomer see the whole job, keyscan and
login included, on one machine with nothing else installed.

An instance is a directory ``<state-path>/<instance-id>/`` and the process
serving it (:mod:`fleetflow.drivers.local_server`), started in its own
session so that it outlives the launcher that created it. The directory
holds:

``instance.json``
    node id, provider, pool, label, the metadata given at create, user name,
    creation time and pid; written before the process starts.
``server.pid``, ``port``
    written by the process as it starts: it binds port 0 on 127.0.0.1 (the
    kernel picks a free port; binding before listening reserves it, so two
    instances never race for one), writes the port, generates its host keys
    (``ssh_host_*_key`` and ``.pub``), waits ``boot-delay`` seconds, then
    listens. Until then a connection is refused, as by a cloud server whose
    sshd has not started yet, so the launch flow's keyscan retries.
``authorized_keys``, ``server.log``, ``home/``
    the keys that may log in, the process's log, and the directory commands
    run in.

The instance is BUILDING until its process runs and has its port and every
host key file, ACTIVE while it runs (keyscan then requires exactly those
keys), ERROR if the process died. The driver finds instances by
reading the directories, so instances left by a launcher that crashed are
listed, with their metadata, and can be deleted. A thread lock and a
``flock`` on ``<state-path>/.lock`` make create and the quota count safe for
threads and for several processes sharing the state path.
"""

import contextlib
import fcntl
import getpass
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid

import tenacity
import voluptuous as v

from fleetflow.drivers import base
from fleetflow.drivers import local_server
from fleetflow import exceptions
from fleetflow import ssh

LOG = logging.getLogger(__name__)

INSTANCE_FILE = 'instance.json'
LOG_FILE = 'server.log'
LOCK_FILE = '.lock'
ID_RE = re.compile(r'^[0-9a-f]{32}$')
#: what a cut short create (``.tmp-``) or delete (``.deleting-``) leaves
STALE_RE = re.compile(r'^\.(tmp|deleting)-[0-9a-f]{32}$')
SERVER_MODULE = 'fleetflow.drivers.local_server'
#: seconds an instance may have no pid yet before it counts as failed
START_GRACE = 30.0
#: seconds to wait for a process to exit after SIGTERM, then SIGKILL
STOP_TIMEOUT = 5.0


def _state_path(conf):
    return getattr(conf, 'state_path', None) or os.path.abspath('state')


def resolve_authorized_keys(entries):
    """``"type base64"`` keys from key strings and paths to .pub files.

    :raises ConfigError: for a file that cannot be read or a bad key.
    """
    if isinstance(entries, str):
        entries = [entries]
    keys = []
    for entry in entries or ():
        try:
            if len(entry.split()) >= 2:
                keys.append('%s %s' % ssh.parse_key(entry))
                continue
            with open(os.path.expanduser(entry)) as f:
                keys.extend(local_server.read_public_keys(f.read()))
        except OSError as e:
            raise exceptions.ConfigError(
                'authorized-keys: cannot read %s: %s' % (entry, e.strerror))
        except ValueError as e:
            raise exceptions.ConfigError('authorized-keys: %s' % e)
    return keys


def run_command(host, port, username, pkey, host_keys, command,
                timeout=60.0):
    """Run a command on an instance as a consumer would.

    Connects with strict host key checking (``RejectPolicy`` and only the
    given ``host_keys``, ``"type base64"`` strings), logs in with ``pkey``
    (a paramiko key or a path to a private key file).

    :returns: ``(exit_status, stdout_bytes)``
    """
    status, out, _ = ssh.run_command(host, port, username, pkey, host_keys,
                                     command, timeout=timeout)
    return status, out


def _read_int(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _pid_exited(pid):
    """Whether ``pid`` is gone, or a zombie (reaped if it is our child)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return True
    try:
        with open('/proc/%d/stat' % pid, 'rb') as f:
            state = f.read().rsplit(b')', 1)[1].split()[0]
    except FileNotFoundError:
        # Gone meanwhile; without procfs, trust the signal test.
        return os.path.isdir('/proc/self')
    except (OSError, IndexError):
        return False
    if state == b'Z':
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return True
    return False


def _process_running(pid, directory):
    """Whether ``pid`` is alive and is the server of ``directory``."""
    if _pid_exited(pid):
        return False
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            cmdline = f.read().split(b'\0')
    except FileNotFoundError:
        return not os.path.isdir('/proc/self')
    except OSError:
        return True
    # the instance id ends the --directory argument
    name = os.fsencode(os.path.basename(directory))
    return (SERVER_MODULE.encode() in cmdline
            and any(arg.rstrip(b'/').endswith(name) for arg in cmdline))


class LocalDriver(base.Driver):
    """Instances that are SSH server processes on this host.

    Provider keys: ``state-path`` (default ``<state_path>/local``),
    ``boot-delay`` (seconds before SSH listens, default 0),
    ``max-instances`` (quota, default unlimited), ``authorized-keys`` (public
    key strings or paths to .pub files allowed to log in) and
    ``host-key-types`` (default ed25519, ecdsa, rsa). The user name is the
    pool label's ``username``, by default the user fleetflow runs as.
    """

    provider_schema = {
        'state-path': str,
        'boot-delay': v.All(v.Any(int, float), v.Range(min=0)),
        'max-instances': v.All(int, v.Range(min=0)),
        'authorized-keys': v.Any(str, [str]),
        'host-key-types': v.All(
            [v.In(sorted(local_server.HOST_KEY_KINDS))], v.Length(min=1)),
    }

    def __init__(self, provider, conf):
        super().__init__(provider, conf)
        self.state_path = os.path.abspath(os.path.expanduser(
            provider.get('state-path')
            or os.path.join(_state_path(conf), 'local')))
        self.boot_delay = float(provider.get('boot-delay') or 0)
        self.max_instances = provider.get('max-instances')
        self.host_key_types = list(provider.get(
            'host-key-types', local_server.DEFAULT_HOST_KEY_KINDS))
        self.authorized_keys = resolve_authorized_keys(
            provider.get('authorized-keys'))
        if not self.authorized_keys:
            LOG.warning('provider %s: no authorized-keys; nobody can log in '
                        'to its instances', self.name)
        self._lock = threading.Lock()
        self._procs = {}
        os.makedirs(self.state_path, mode=0o700, exist_ok=True)

    # -- files and locks --------------------------------------------------

    @contextlib.contextmanager
    def _locked(self):
        """Hold the thread lock and the state path's flock.

        For create and the quota count, across threads and processes.
        """
        with self._lock:
            fd = os.open(os.path.join(self.state_path, LOCK_FILE),
                         os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _dir(self, external_id):
        return os.path.join(self.state_path, external_id)

    def _ids(self):
        try:
            names = os.listdir(self.state_path)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if ID_RE.match(n))

    def _read_info(self, external_id):
        if not isinstance(external_id, str) or not ID_RE.match(external_id):
            raise base.NotFound('no local instance %r' % (external_id,))
        directory = self._dir(external_id)
        try:
            with open(os.path.join(directory, INSTANCE_FILE)) as f:
                return json.load(f)
        except FileNotFoundError:
            if os.path.isdir(directory):
                return {'id': external_id}
            raise base.NotFound('no local instance %s' % external_id)
        except ValueError:
            return {'id': external_id}

    def _write_info(self, directory, info):
        local_server.write_atomic(os.path.join(directory, INSTANCE_FILE),
                                  json.dumps(info, indent=2, sort_keys=True))

    def _remove_stale(self):
        """Remove what a create or delete cut short left behind.

        Only this driver's own leftovers: directories named as it names
        them, owned by this user, not links; the state path may be shared
        (``/tmp``).
        """
        now = time.time()
        for name in os.listdir(self.state_path):
            if not STALE_RE.match(name):
                continue
            path = os.path.join(self.state_path, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() \
                    and now - info.st_mtime > 60:
                shutil.rmtree(path, ignore_errors=True)

    # -- processes --------------------------------------------------------

    def _pid(self, external_id, info):
        return info.get('pid') or _read_int(
            os.path.join(self._dir(external_id), local_server.PID_FILE))

    def _alive(self, external_id, pid):
        proc = self._procs.get(external_id)
        if proc is not None and proc.pid == pid:
            if proc.poll() is None:
                return True
            self._procs.pop(external_id, None)
            return False
        return _process_running(pid, self._dir(external_id))

    def _stopped(self, external_id, pid):
        """Whether a signalled server has exited.

        Not :meth:`_alive`: an exiting process's command line empties
        before it has exited.
        """
        proc = self._procs.get(external_id)
        if proc is not None and proc.pid == pid:
            return proc.poll() is not None
        return _pid_exited(pid)

    def _stop_process(self, external_id, pid):
        if not pid or not self._alive(external_id, pid):
            return
        try:
            group = os.getpgid(pid) == pid
        except ProcessLookupError:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                if group:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
            except ProcessLookupError:
                return
            try:
                tenacity.Retrying(
                    retry=tenacity.retry_if_not_result(bool),
                    stop=tenacity.stop_after_delay(STOP_TIMEOUT),
                    wait=tenacity.wait_fixed(0.05),
                )(self._stopped, external_id, pid)
                return
            except tenacity.RetryError:
                pass
            LOG.warning('local instance %s: pid %d did not exit on %s',
                        external_id, pid, sig.name)
        raise base.DriverError('local instance %s: pid %d does not exit'
                               % (external_id, pid))

    # -- the driver contract ----------------------------------------------

    def _instance(self, external_id, info):
        directory = self._dir(external_id)
        pid = self._pid(external_id, info)
        port = _read_int(os.path.join(directory, local_server.PORT_FILE))
        host_keys = self._host_keys(directory)
        fault = None
        if pid and self._alive(external_id, pid):
            # active once it has its port and all its host keys: keyscan
            # then requires exactly those keys
            state = base.ACTIVE if port and host_keys else base.BUILDING
        elif not pid and time.time() - info.get('created', 0) < START_GRACE:
            state = base.BUILDING
        else:
            state = base.ERROR
            fault = 'server process %s is not running%s' % (
                pid or '(never started)', self._last_log_line(directory))
        return base.Instance(
            external_id=external_id,
            state=state,
            metadata=dict(info.get('metadata') or {}),
            interface_ip='127.0.0.1',
            private_ipv4='127.0.0.1',
            connection_port=port,
            connection_type='ssh',
            username=info.get('username'),
            region='local',
            fault=fault,
            host_keys=host_keys if state == base.ACTIVE else None,
            host_keys_exact=True)

    def _host_keys(self, directory):
        keys = []
        for kind in self.host_key_types:
            try:
                with open(os.path.join(directory,
                                       'ssh_host_%s_key.pub' % kind)) as f:
                    keys.append('%s %s' % ssh.parse_key(f.read()))
            except (OSError, ValueError):
                return None
        return sorted(keys)

    @staticmethod
    def _last_log_line(directory):
        try:
            with open(os.path.join(directory, LOG_FILE), 'rb') as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 2048))
                lines = f.read().decode('utf-8', 'replace').splitlines()
        except OSError:
            return ''
        return ': %s' % lines[-1] if lines else ''

    def _own(self, info):
        return info.get('provider') in (None, self.name)

    def create_instance(self, node_id, pool, label, metadata):
        username = label.get('username') or getpass.getuser()
        external_id = uuid.uuid4().hex
        directory = self._dir(external_id)
        with self._locked():
            self._remove_stale()
            if self.max_instances is not None:
                used = sum(1 for i in self._ids()
                           if self._own(self._read_info_quiet(i)))
                if used >= self.max_instances:
                    raise base.QuotaError(
                        'provider %s: %d of max-instances %d in use'
                        % (self.name, used, self.max_instances))
            info = {
                'id': external_id,
                'node_id': node_id,
                'provider': self.name,
                'pool': pool.get('name'),
                'label': label.get('name'),
                'metadata': dict(metadata or {}),
                'username': username,
                'created': time.time(),
                'boot_delay': self.boot_delay,
                'pid': None,
            }
            tmp = os.path.join(self.state_path, '.tmp-' + external_id)
            os.makedirs(tmp, mode=0o700)
            local_server.write_atomic(
                os.path.join(tmp, local_server.AUTHORIZED_KEYS_FILE),
                ''.join(k + '\n' for k in self.authorized_keys))
            self._write_info(tmp, info)
            os.rename(tmp, directory)
            try:
                with open(os.path.join(directory, LOG_FILE), 'ab') as log:
                    proc = subprocess.Popen(
                        [sys.executable, '-m', SERVER_MODULE,
                         '--directory', directory,
                         '--username', username,
                         '--boot-delay', repr(self.boot_delay),
                         '--host-key-types', ','.join(self.host_key_types)],
                        cwd=directory, stdin=subprocess.DEVNULL, stdout=log,
                        stderr=subprocess.STDOUT, close_fds=True,
                        start_new_session=True)
            except OSError as e:
                shutil.rmtree(directory, ignore_errors=True)
                raise base.DriverError('cannot start local instance: %s' % e)
            self._procs[external_id] = proc
            info['pid'] = proc.pid
            self._write_info(directory, info)
        LOG.info('provider %s: started local instance %s (pid %d) for node '
                 '%s', self.name, external_id, proc.pid, node_id)
        return self._instance(external_id, info)

    def _read_info_quiet(self, external_id):
        try:
            return self._read_info(external_id)
        except base.NotFound:
            return {}

    def list_instances(self):
        instances = []
        for external_id in self._ids():
            try:
                info = self._read_info(external_id)
            except base.NotFound:
                continue
            if self._own(info):
                instances.append(self._instance(external_id, info))
        return instances

    def delete_instance(self, external_id):
        info = self._read_info(external_id)
        self._stop_process(external_id, self._pid(external_id, info))
        graveyard = os.path.join(self.state_path, '.deleting-' + external_id)
        try:
            os.rename(self._dir(external_id), graveyard)
        except FileNotFoundError:
            raise base.NotFound('no local instance %s' % external_id)
        shutil.rmtree(graveyard, ignore_errors=True)
        self._procs.pop(external_id, None)
        LOG.info('provider %s: deleted local instance %s', self.name,
                 external_id)

    def get_quota_limits(self):
        return base.Quota(instances=self.max_instances)
