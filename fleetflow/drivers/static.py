"""The ``static`` driver: hosts that already exist, reachable by SSH.

Each pool lists its hosts under ``nodes:`` with nodepool's static driver
keys. A host serves the labels it lists, up to ``max-parallel-jobs`` nodes
at once; "creating" an instance allocates one of those slots and is
ACTIVE at once, "deleting" it runs the optional ``cleanup-command`` on the
host over SSH and frees the slot. When every slot of the hosts serving a
label is taken, create raises :class:`~fleetflow.drivers.base.QuotaError`,
so the request waits instead of failing.

The instance carries the host's expected keys (``host-key``) in
``host_keys``; the launch flow's keyscan checks that the host presents
them. The cleanup command runs with strict host key checking against those
keys; for a host without ``host-key`` the keys seen on the first cleanup
are recorded and required from then on (trust on first use, logged).

Allocations, out-of-service marks and recorded keys persist in
``<state-path>/allocations.json`` (under a thread lock and a ``flock``),
so ``list_instances`` still knows every allocation after a restart, and
several launcher processes may share it.

:meth:`StaticDriver.check_hosts` tries a TCP connection to every host; a
host that does not answer is taken out of service (no new allocations)
until a later check succeeds. The launcher calls it on its cleanup pass.
"""

import concurrent.futures
import contextlib
import copy
import fcntl
import getpass
import ipaddress
import json
import logging
import os
import threading
import time
import uuid

import paramiko
import voluptuous as v

from fleetflow.drivers import base
from fleetflow.drivers import local_server
from fleetflow import exceptions
from fleetflow import keyscan
from fleetflow import layout
from fleetflow import ssh

LOG = logging.getLogger(__name__)

STATE_FILE = 'allocations.json'
LOCK_FILE = '.lock'
ACTIVE = 'active'
DELETING = 'deleting'


def _public_key(value):
    try:
        ssh.parse_key(value)
    except ValueError as e:
        raise v.Invalid(str(e))
    return value


PORT = v.All(int, v.Range(min=1, max=65535))
SECONDS = v.All(v.Any(int, float), v.Range(min=0))


def _label_names(value):
    for name in _labels_of({'labels': value}):
        layout.NAME(name)
    return value


#: a host of a pool's ``nodes``, with nodepool's keys
NODE = {
    v.Required('name'): str,
    v.Required('labels'): v.All(v.Any(str, [str]), _label_names),
    'username': str,
    'timeout': SECONDS,
    'host-key-checking': bool,
    'connection-port': PORT,
    'connection-type': layout.CONNECTION_TYPE,
    'host-key': v.Any(v.All(str, _public_key), [v.All(str, _public_key)]),
    'max-parallel-jobs': v.All(int, v.Range(min=1)),
    'python-path': str,
    'shell-type': str,
}
#: what a label served by a host takes from it, unless the pool sets it
HOST_LABEL_KEYS = ('username', 'python-path', 'shell-type',
                   'connection-type', 'connection-port')


def host_id(name, port):
    """How a host is named in the state and the logs."""
    return '[%s]:%d' % (name, port)


def _state_path(conf):
    return getattr(conf, 'state_path', None) or os.path.abspath('state')


def _as_list(value):
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _labels_of(node):
    """A host's labels: nodepool's list or space-separated string."""
    labels = node['labels']
    return labels.split() if isinstance(labels, str) else list(labels)


def _connect_timeout(conf):
    try:
        return conf.keyscan.connect_timeout
    except (AttributeError, KeyError):
        return 5.0


class StaticDriver(base.Driver):
    """Slots of existing hosts.

    Provider keys: ``state-path`` (default ``<state_path>/static-<name>``),
    ``cleanup-command``, ``cleanup-timeout`` (seconds, default 300),
    ``private-key`` (file the cleanup command logs in with; without it,
    the SSH agent and ``~/.ssh/id_*``). Pool keys: ``nodes`` and
    ``cleanup-command`` (overrides the provider's).
    """

    provider_schema = {
        'state-path': str,
        'cleanup-command': str,
        'cleanup-timeout': SECONDS,
        'private-key': str,
    }
    pool_schema = {
        'nodes': [NODE],
        'cleanup-command': str,
    }
    label_schema = {}

    @classmethod
    def complete_labels(cls, provider, pool):
        """The labels the pool lists and those only its hosts name.

        A label takes the first of its hosts' ``username``,
        ``python-path``, ``shell-type`` and connection; host key checking
        is off only when every host serving it has it off.
        """
        listed = {label['name'] for label in pool['labels']}
        labels = list(pool['labels'])
        for node in pool.get('nodes', []):
            for name in _labels_of(node):
                if name not in listed:
                    listed.add(name)
                    labels.append({'name': name})
        completed = []
        for label in labels:
            hosts = [node for node in pool.get('nodes', [])
                     if label['name'] in _labels_of(node)]
            values = {key: hosts[0][key] for key in HOST_LABEL_KEYS
                      if hosts and key in hosts[0]}
            if hosts:
                values['host-key-checking'] = any(
                    node.get('host-key-checking', pool['host-key-checking'])
                    for node in hosts)
            completed.append({**values, **label})
        return completed

    def __init__(self, provider, conf):
        super().__init__(provider, conf)
        if not provider.get('state-path') and \
                not layout.NAME_RE.fullmatch(self.name):
            raise exceptions.ConfigError(
                'provider %r: a static provider\'s name names its state '
                'directory: it must be a safe name (letters, digits, ".", '
                '"_" and "-")' % (self.name,))
        self.state_path = os.path.abspath(os.path.expanduser(
            provider.get('state-path')
            or os.path.join(_state_path(conf), 'static-%s' % self.name)))
        self.cleanup_timeout = float(provider.get('cleanup-timeout', 300))
        self.private_key = provider.get('private-key')
        self.check_timeout = _connect_timeout(conf)
        self.hosts = self._load_hosts(provider)
        self._lock = threading.Lock()
        os.makedirs(self.state_path, mode=0o700, exist_ok=True)

    def _load_hosts(self, provider):
        hosts = {}
        for pool in provider.get('pools', []):
            pool_labels = {label['name'] for label in pool.get('labels', [])}
            served = set()
            for node in pool.get('nodes', []):
                port = node.get('connection-port', 22)
                hid = host_id(node['name'], port)
                if hid in hosts:
                    raise exceptions.ConfigError(
                        'provider %s: host %s is listed twice'
                        % (self.name, hid))
                labels = _labels_of(node)
                served.update(labels)
                hosts[hid] = {
                    'id': hid,
                    'name': node['name'],
                    'port': port,
                    'pool': pool['name'],
                    'labels': labels,
                    'username': node.get('username'),
                    'timeout': node.get('timeout', self.check_timeout),
                    'connection-type': node.get('connection-type', 'ssh'),
                    'host-key': ['%s %s' % ssh.parse_key(k)
                                 for k in _as_list(node.get('host-key'))],
                    'max-parallel-jobs': node.get('max-parallel-jobs', 1),
                    'cleanup-command': pool.get(
                        'cleanup-command', provider.get('cleanup-command')),
                }
            for name in pool_labels - served:
                LOG.warning('provider %s pool %s: no host serves label %s',
                            self.name, pool['name'], name)
        return hosts

    # -- state ------------------------------------------------------------

    @contextlib.contextmanager
    def _state(self):
        """Yield the state, locked across threads and processes.

        Changes made to it are saved when the block ends without error.
        """
        with self._lock:
            fd = os.open(os.path.join(self.state_path, LOCK_FILE),
                         os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                state = self._read_state()
                before = copy.deepcopy(state)
                yield state
                if state != before:
                    local_server.write_atomic(
                        os.path.join(self.state_path, STATE_FILE),
                        json.dumps(state, indent=2, sort_keys=True))
            finally:
                os.close(fd)

    def _read_state(self):
        try:
            with open(os.path.join(self.state_path, STATE_FILE)) as f:
                state = json.load(f)
        except FileNotFoundError:
            state = {}
        except ValueError as e:
            raise base.DriverError('provider %s: %s is not valid JSON: %s'
                                   % (self.name, STATE_FILE, e))
        for key in ('allocations', 'out_of_service', 'host_keys'):
            state.setdefault(key, {})
        return state

    def _snapshot(self):
        with self._state() as state:
            return copy.deepcopy(state)

    # -- instances ----------------------------------------------------------

    def _expected_keys(self, host, state):
        return list(host['host-key']) or list(
            state['host_keys'].get(host['id'], [])) or None

    def _instance(self, allocation, state):
        host = self.hosts.get(allocation['host'])
        if host is not None:
            expected = self._expected_keys(host, state)
        else:
            expected = state['host_keys'].get(allocation['host']) or None
        name = allocation['name']
        addresses = {}
        try:
            address = ipaddress.ip_address(name)
            addresses['public_ipv%d' % address.version] = name
        except ValueError:
            pass
        return base.Instance(
            external_id=allocation['id'],
            state=base.DELETING if allocation['state'] == DELETING
            else base.ACTIVE,
            metadata=dict(allocation.get('metadata') or {}),
            interface_ip=name,
            connection_port=allocation['port'],
            connection_type=allocation['connection-type'],
            username=allocation['username'],
            host_keys=expected,
            **addresses)

    def create_instance(self, node_id, pool, label, metadata):
        label_name = label['name']
        with self._state() as state:
            allocations = state['allocations']
            for allocation in allocations.values():
                if allocation.get('node_id') == node_id and \
                        allocation['state'] == ACTIVE:
                    return self._instance(allocation, state)
            candidates = [h for h in self.hosts.values()
                          if h['pool'] == pool['name']
                          and label_name in h['labels']]
            if not candidates:
                raise base.DriverError(
                    'provider %s pool %s: no host serves label %s'
                    % (self.name, pool['name'], label_name))
            used = {}
            for allocation in allocations.values():
                used.setdefault(allocation['host'], set()).add(
                    allocation['slot'])
            free = [h for h in candidates
                    if h['id'] not in state['out_of_service']
                    and len(used.get(h['id'], ())) < h['max-parallel-jobs']]
            if not free:
                down = sum(1 for h in candidates
                           if h['id'] in state['out_of_service'])
                raise base.QuotaError(
                    'provider %s pool %s: every slot of the %d hosts serving '
                    'label %s is taken (%d out of service)'
                    % (self.name, pool['name'], len(candidates), label_name,
                       down))
            host = min(free, key=lambda h: len(used.get(h['id'], ()))
                       / h['max-parallel-jobs'])
            taken = used.get(host['id'], set())
            slot = min(set(range(host['max-parallel-jobs'])) - taken)
            allocation = {
                'id': uuid.uuid4().hex,
                'host': host['id'],
                'slot': slot,
                'name': host['name'],
                'port': host['port'],
                'connection-type': host['connection-type'],
                'username': (host['username'] or label.get('username')
                             or getpass.getuser()),
                'node_id': node_id,
                'pool': pool['name'],
                'label': label_name,
                'metadata': dict(metadata or {}),
                'created': time.time(),
                'state': ACTIVE,
            }
            allocations[allocation['id']] = allocation
            LOG.info('provider %s: allocated slot %d of %s to node %s (%s)',
                     self.name, slot, host['id'], node_id, allocation['id'])
            return self._instance(allocation, state)

    def list_instances(self):
        state = self._snapshot()
        return [self._instance(a, state)
                for _, a in sorted(state['allocations'].items())]

    def delete_instance(self, external_id):
        with self._state() as state:
            allocation = state['allocations'].get(external_id)
            if allocation is None:
                raise base.NotFound('no static allocation %s' % external_id)
            allocation['state'] = DELETING
            allocation = copy.deepcopy(allocation)
        host = self.hosts.get(allocation['host'])
        command = host['cleanup-command'] if host else self.provider.get(
            'cleanup-command')
        if command:
            if allocation['connection-type'] in keyscan.SSH_CONNECTION_TYPES:
                self._run_cleanup(allocation, host, command)
            else:
                LOG.warning('provider %s: no cleanup of %s: connection type '
                            '%s is not SSH', self.name, allocation['host'],
                            allocation['connection-type'])
        with self._state() as state:
            state['allocations'].pop(external_id, None)
        LOG.info('provider %s: freed slot %d of %s (%s)', self.name,
                 allocation['slot'], allocation['host'], external_id)

    def _known_keys(self, allocation, host):
        state = self._snapshot()
        if host is not None and host['host-key']:
            return host['host-key']
        keys = state['host_keys'].get(allocation['host'])
        if keys:
            return keys
        try:
            keys = keyscan.scan_host_keys(
                allocation['name'], allocation['port'],
                allocation['connection-type'], timeout=self.check_timeout)
        except exceptions.FleetflowError as e:
            raise base.DriverError('cleanup of %s: %s'
                                   % (allocation['host'], e))
        LOG.warning('provider %s: %s has no host-key; trusting the keys it '
                    'presents now from now on: %s', self.name,
                    allocation['host'],
                    ', '.join(ssh.fingerprint(k) for k in keys))
        with self._state() as state:
            state['host_keys'].setdefault(allocation['host'], keys)
            return state['host_keys'][allocation['host']]

    def _run_cleanup(self, allocation, host, command):
        where = '%s@%s' % (allocation['username'], allocation['host'])
        host_keys = self._known_keys(allocation, host)
        try:
            client = ssh.connect(
                allocation['name'], allocation['port'],
                allocation['username'], host_keys, pkey=self.private_key,
                timeout=self.check_timeout,
                allow_agent=not self.private_key,
                look_for_keys=not self.private_key)
        except paramiko.BadHostKeyException as e:
            LOG.error('SECURITY: cleanup of %s refused: host key mismatch: '
                      '%s', where, e)
            raise base.DriverError('cleanup of %s: host key mismatch: %s'
                                   % (where, e))
        except (paramiko.SSHException, OSError, EOFError,
                exceptions.FleetflowError) as e:
            raise base.DriverError('cleanup of %s: cannot connect: %s'
                                   % (where, e))
        try:
            status, out, err = ssh.run(client, command,
                                       timeout=self.cleanup_timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise base.DriverError('cleanup of %s: %s' % (where, e))
        finally:
            client.close()
        if status != 0:
            tail = err.decode('utf-8', 'replace').strip()[-500:]
            raise base.DriverError('cleanup of %s: %r exited %d: %s'
                                   % (where, command, status, tail))
        LOG.info('provider %s: cleanup of %s done', self.name, where)

    def get_quota_limits(self):
        return base.Quota(instances=sum(h['max-parallel-jobs']
                                        for h in self.hosts.values()))

    # -- health -----------------------------------------------------------

    def _answers(self, host):
        try:
            keyscan.check_port(host['name'], host['port'], host['timeout'])
            return True, None
        except exceptions.HostUnreachable as e:
            return False, str(e)

    def check_hosts(self):
        """Try a TCP connection to every host; update who is in service.

        A host that does not answer is marked out of service and gets no
        new allocations; one that answers again is back in service.

        :returns: ``{host id: answered}``
        """
        hosts = list(self.hosts.values())
        if not hosts:
            return {}
        workers = min(16, len(hosts))
        with concurrent.futures.ThreadPoolExecutor(workers) as executor:
            answers = dict(zip((h['id'] for h in hosts),
                               executor.map(self._answers, hosts)))
        with self._state() as state:
            down = state['out_of_service']
            for hid, (answered, reason) in answers.items():
                if answered and hid in down:
                    del down[hid]
                    LOG.info('provider %s: host %s answers again; back in '
                             'service', self.name, hid)
                elif not answered and hid not in down:
                    down[hid] = {'since': time.time(), 'reason': reason}
                    LOG.warning('provider %s: host %s does not answer (%s); '
                                'out of service', self.name, hid, reason)
        return {hid: answered for hid, (answered, _) in answers.items()}

    def out_of_service(self):
        """``{host id: {'since': time, 'reason': text}}`` of hosts down."""
        return self._snapshot()['out_of_service']
