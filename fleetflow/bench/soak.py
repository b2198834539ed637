"""Soak real launchers under faults and check that nothing is lost.

``fleetflow-bench soak --mode single|redis|zookeeper|frontend --duration
S`` runs real ``fleetflow-launcher`` processes against the fake cloud
(which injects every fault kind at ``--fault KIND=RATE``) for S seconds,
under a steady stream of requests (``--rate`` a second, 1 to
``--max-size`` nodes of random ``--labels``, released after a random
hold), and injects process and infrastructure faults at random times
(``--seed``; the seed is printed):

- every mode: SIGKILL and SIGTERM of a launcher, restarted afterwards;
- ``redis`` and ``zookeeper`` (``--launchers`` processes on PostgreSQL,
  one jobboard): a launcher frozen with SIGSTOP past its claim expiry,
  then SIGCONT; the jobboard server restarted (the soak runs its own
  redis-server or ZooKeeper on a free loopback port); PostgreSQL
  restarted with ``pg_ctlcluster`` when ``--restart-postgresql`` is given
  and the soak runs as root;
- ``frontend`` (one launcher on SQLite serving Zuul through the ZooKeeper
  front end; Zuul is nodepool's own client, :class:`ZuulRequests`):
  ZooKeeper (the soak's own, on TLS) restarted, and Zuul's session lost.

It checks the invariants every ``--check-interval`` seconds and at the
end, against the fake cloud's history of every instance and the database
(:class:`Checker`); the first violation stops the soak with its evidence.
It prints its figures as JSON, then as a table; it exits 1 on a
violation.
"""

import argparse
import collections
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from oslo_config import cfg
import sqlalchemy as sa
import yaml

from fleetflow.bench import launcher as bench
from fleetflow.bench import zk_requester
from fleetflow import cmd
from fleetflow import conf as ff_conf
from fleetflow import context as ff_context
from fleetflow.db import migration
from fleetflow.db import models
from fleetflow.drivers import fake
from fleetflow import flowinfo
from fleetflow import node_states

PROVIDER = 'fake-1'
#: seconds a launcher process may take to start (to log that it started)
START_LIMIT = 120
#: what a launcher logs once it has started (and resumed its flows)
STARTED_LINE = re.compile(rb'INFO fleetflow\.launcher \[-\] Launcher \S+ '
                          rb'started')
#: seconds after a server restart that a launcher may fail to reach it
SERVER_GRACE = 30
LIVE_NODE = (node_states.BUILDING, node_states.DELETING)
#: where tools/test-servers keeps the URL of its PostgreSQL test role
TEST_POSTGRES_URL_FILE = '~/.config/fleetflow/test-postgres-url'
#: the process and infrastructure faults, and the modes they apply to
PROCESS_FAULTS = {
    'sigkill': ('single', 'redis', 'zookeeper', 'frontend'),
    'sigterm': ('single', 'redis', 'zookeeper', 'frontend'),
    'sigstop': ('redis', 'zookeeper'),
    'board-restart': ('redis', 'zookeeper'),
    'postgresql-restart': ('redis', 'zookeeper'),
    # The ZooKeeper front end's: its server restarted, and the requester
    # (Zuul) losing its session, with its requests and node locks.
    'zookeeper-restart': ('frontend',),
    'session-loss': ('frontend',),
}
#: seconds the requester may take to answer
CALL_TIMEOUT = 30
#: the front end's ZooKeeper chroot
CHROOT = '/soak'
#: where tools/test-tls makes the test certificates
TLS_DIR = '/etc/zookeeper/fleetflow-test-tls'


def _test_database():
    """The test PostgreSQL URL, or None."""
    url = os.environ.get('FLEETFLOW_TEST_POSTGRES_URL')
    if url:
        return url
    try:
        with open(os.path.expanduser(TEST_POSTGRES_URL_FILE)) as f:
            return f.read().strip() or None
    except OSError:
        return None


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='fleetflow-bench soak', description=__doc__.split('\n')[0])
    cmd.add_version_argument(parser)
    parser.add_argument('--mode', choices=('single', 'redis', 'zookeeper',
                                           'frontend'),
                        default='single',
                        help='one launcher on SQLite; or --launchers on '
                             'PostgreSQL and a jobboard; or one launcher '
                             'serving Zuul through the ZooKeeper front end')
    parser.add_argument('--nodepool-client', default=os.environ.get(
        'FLEETFLOW_TEST_NODEPOOL_CLIENT', '.nodepool-client'),
        help='frontend: the virtualenv of nodepool\'s ZooKeeper client '
             '(tools/nodepool-client-venv) that plays Zuul')
    parser.add_argument('--tls-dir', default=os.environ.get(
        'FLEETFLOW_TEST_ZK_TLS', TLS_DIR),
        help='frontend: the ZooKeeper certificates (tools/test-tls)')
    parser.add_argument('--duration', type=float, default=300,
                        help='seconds of requests and faults')
    parser.add_argument('--seed', type=int,
                        help='seed of every random choice (printed)')
    parser.add_argument('--launchers', type=int, default=2,
                        help='launcher processes in a jobboard mode')
    parser.add_argument('--rate', type=float, default=0.5,
                        help='requests submitted a second (Poisson); the '
                             'default fills about half the default pool, '
                             'so the run measures faults, not a queue')
    parser.add_argument('--max-size', type=int, default=3,
                        help='nodes a request asks for, at most')
    parser.add_argument('--labels', default='small,large',
                        help='comma-separated labels requests choose from')
    parser.add_argument('--hold', type=float, nargs=2, default=(1, 15),
                        metavar=('MIN', 'MAX'),
                        help='seconds a fulfilled request is held')
    parser.add_argument('--max-servers', type=int, default=25)
    parser.add_argument('--create-latency', type=float, default=1.0)
    parser.add_argument('--delete-latency', type=float, default=0.5)
    parser.add_argument('--fault', action='append', default=[],
                        metavar='KIND=RATE',
                        help='fake cloud fault rate (default: every kind '
                             'at 0.05; KIND=0 turns one off)')
    parser.add_argument('--fault-interval', type=float, default=20,
                        help='mean seconds between process faults')
    parser.add_argument('--process-faults',
                        default=','.join(PROCESS_FAULTS),
                        help='comma-separated process faults to inject')
    parser.add_argument('--restart-postgresql', action='store_true',
                        help='allow restarting the local PostgreSQL '
                             'cluster (root only; it serves everyone)')
    parser.add_argument(
        '--database', default=_test_database(),
        help='PostgreSQL URL of the jobboard modes (a new schema is used; '
             'default: $FLEETFLOW_TEST_POSTGRES_URL, else the one '
             'tools/test-servers keeps in %s)' % TEST_POSTGRES_URL_FILE)
    parser.add_argument('--claim-expiry', type=int, default=4)
    parser.add_argument('--cleanup-interval', type=float, default=5)
    parser.add_argument('--check-interval', type=float, default=2)
    parser.add_argument('--window', type=float, default=30,
                        help='seconds of each throughput and resource '
                             'sample')
    parser.add_argument('--max-logbook-rows', type=int, default=60,
                        help='flow and atom rows a node may have')
    parser.add_argument('--slack', type=float, default=60,
                        help='seconds a node may exceed its timeouts by '
                             '(restarts, a loaded machine)')
    parser.add_argument('--drain-timeout', type=float, default=240,
                        help='seconds the drain may take beyond twice the '
                             'time its backlog takes at the run\'s '
                             'measured throughput')
    parser.add_argument('--drain-stall', type=float, default=180,
                        help='seconds the drain may go with nothing '
                             'finished (no request settled or released, '
                             'no node gone)')
    parser.add_argument('--workers', type=int, default=8)
    parser.add_argument('--keep', action='store_true',
                        help='keep the state directory and logs')
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1 << 31)
    args.labels = [label for label in args.labels.split(',') if label]
    args.process_faults = [kind for kind in args.process_faults.split(',')
                           if kind]
    unknown = set(args.process_faults) - set(PROCESS_FAULTS)
    if unknown:
        parser.error('unknown process faults: %s' % ', '.join(unknown))
    faults = dict.fromkeys(fake.FAULTS, 0.05)
    for item in args.fault:
        kind, _, rate = item.partition('=')
        if kind not in fake.FAULTS:
            parser.error('unknown fault kind %r (one of %s)'
                         % (kind, ', '.join(fake.FAULTS)))
        faults[kind] = float(rate)
    args.fault = faults
    if args.mode in ('single', 'frontend'):
        args.launchers = 1
    elif not args.database:
        parser.error('--mode %s needs --database' % args.mode)
    return args


# The servers the soak runs (and restarts) itself

def _wait_port(port, timeout=60):
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


class Server:
    """A server of the soak's own on a free loopback port, to restart.

    Redis or ZooKeeper for a jobboard; ZooKeeper on TLS (``tls_dir``: the
    certificates) for the front end.
    """

    def __init__(self, kind, tmp, tls_dir=None):
        self.kind = kind
        self.tls_dir = tls_dir
        self.port = bench.free_port()
        self.dir = os.path.join(tmp, kind)
        os.makedirs(self.dir)
        self.log = os.path.join(tmp, '%s.log' % kind)
        self.proc = None

    @staticmethod
    def available(kind):
        if kind == 'redis':
            return shutil.which('redis-server') is not None
        return os.path.exists('/usr/share/java/zookeeper.jar') and \
            shutil.which('java') is not None

    def argv(self):
        if self.kind == 'redis':
            return ['redis-server', '--bind', '127.0.0.1', '--port',
                    str(self.port), '--dir', self.dir, '--save', '',
                    '--appendonly', 'yes']
        config = os.path.join(self.dir, 'zoo.cfg')
        classpath = ['/etc/zookeeper/conf', '/usr/share/java/zookeeper.jar']
        with open(config, 'w') as f:
            f.write('tickTime=2000\ndataDir=%s\nmaxClientCnxns=0\n'
                    'admin.enableServer=false\n' % self.dir)
            if self.tls_dir is None:
                f.write('clientPort=%d\nclientPortAddress=127.0.0.1\n'
                        % self.port)
            else:
                # As tools/test-servers: TLS only, clients show a
                # certificate of the test CA; Netty, with the jars
                # Debian leaves off ZooKeeper's class path.
                f.write('secureClientPort=%d\n'
                        'secureClientPortAddress=127.0.0.1\n'
                        'serverCnxnFactory=org.apache.zookeeper.server.'
                        'NettyServerCnxnFactory\n'
                        'ssl.keyStore.location=%s/server-keystore.pem\n'
                        'ssl.keyStore.type=PEM\n'
                        'ssl.trustStore.location=%s/ca.pem\n'
                        'ssl.trustStore.type=PEM\n'
                        % (self.port, self.tls_dir, self.tls_dir))
                classpath += ['/usr/share/java/netty-codec.jar',
                              '/usr/share/java/netty-resolver.jar']
        return ['java', '-Xmx256m', '-cp', ':'.join(classpath),
                'org.apache.zookeeper.server.ZooKeeperServerMain', config]

    @property
    def hosts(self):
        return '127.0.0.1:%d' % self.port

    def start(self, wait=True):
        with open(self.log, 'a') as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log,
                                         stderr=subprocess.STDOUT)
        if wait:
            _wait_port(self.port)

    def stop(self):
        """Stop it: SIGTERM, and SIGKILL after 5 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def postgresql_cluster(url, clusters):
    """``(version, name)`` of the local cluster that serves ``url``.

    :param clusters: the output of ``pg_lsclusters -h``.
    """
    port = sa.engine.make_url(url).port or 5432
    for line in clusters.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == str(port):
            return fields[0], fields[1]
    raise SystemExit('soak: no local PostgreSQL cluster on port %d' % port)


def restart_postgresql(url):
    """Restart the local PostgreSQL cluster of ``url`` (``pg_ctlcluster``).

    Every client of that cluster loses its connections.
    """
    clusters = subprocess.run(['pg_lsclusters', '-h'], check=True,
                              capture_output=True, text=True).stdout
    version, name = postgresql_cluster(url, clusters)
    subprocess.run(['pg_ctlcluster', version, name, 'restart', '-m',
                    'fast'], check=True, capture_output=True)


# The launcher processes

class Launchers:
    """The launcher processes: started, signalled, restarted, sampled."""

    def __init__(self, tmp, config_files):
        self.tmp = tmp
        self.config_files = config_files
        self.procs = {}
        #: name -> when its process was started
        self.started = {}
        #: name -> where its process's lines begin in its log, until the
        #: process logs that it started (then None)
        self.starting = {}
        #: names whose process the soak stopped on purpose (or froze)
        self.expected_down = set()
        self.frozen = set()
        self.samples = collections.defaultdict(list)

    def log_path(self, name):
        return os.path.join(self.tmp, '%s.log' % name)

    def start(self, name):
        with open(self.log_path(name), 'a') as log:
            self.starting[name] = log.tell()
            self.procs[name] = subprocess.Popen(
                [sys.executable, '-m', 'fleetflow.cmd.launcher',
                 '--config-file', self.config_files[name]],
                stdout=log, stderr=subprocess.STDOUT)
        self.started[name] = time.time()
        self.expected_down.discard(name)

    def up(self):
        """Names of the launchers that run, started, and are not frozen.

        A process still starting (it has not logged that it started) is
        left alone: on a loaded machine a launcher can take longer than
        the time between two faults to start, and launchers killed one
        after another before they started served nothing for minutes.
        """
        return sorted(name for name, proc in self.procs.items()
                      if proc.poll() is None and name not in self.frozen
                      and name not in self.expected_down
                      and self.has_started(name))

    def has_started(self, name):
        """Whether the process of ``name`` logged that it started."""
        offset = self.starting.get(name)
        if offset is None:
            return True
        try:
            with open(self.log_path(name), 'rb') as f:
                f.seek(offset)
                text = f.read()
        except OSError:
            return False
        if STARTED_LINE.search(text):
            self.starting[name] = None
            return True
        # Whole lines only: the next look reads from the last one on.
        self.starting[name] = offset + text.rfind(b'\n') + 1
        return False

    def not_started(self, limit):
        """Launchers running for over ``limit`` s that never started.

        :returns: ``{name: {pid, seconds, cpu, threads}}``; CPU seconds
            that stay flat tell a process that waits from a slow one.
        """
        late = {}
        now = time.time()
        for name, proc in sorted(self.procs.items()):
            if proc.poll() is not None or name in self.frozen or \
                    now - self.started[name] <= limit or \
                    self.has_started(name):
                continue
            try:
                stats = bench.proc_stats(proc.pid)
            except OSError:
                continue
            late[name] = dict(pid=proc.pid,
                              seconds=round(now - self.started[name]),
                              cpu_s=round(stats['cpu'], 2),
                              threads=stats['threads'])
        return late

    def signal(self, name, signum):
        if signum in (signal.SIGKILL, signal.SIGTERM):
            self.expected_down.add(name)
        self.procs[name].send_signal(signum)

    def unexpected_exits(self):
        return {name: proc.returncode for name, proc in self.procs.items()
                if proc.poll() is not None
                and name not in self.expected_down}

    def log_tail(self, name, lines=40, match=None):
        try:
            with open(self.log_path(name)) as f:
                text = f.read().splitlines()
        except OSError:
            return []
        if match:
            text = [line for line in text if match in line]
        return text[-lines:]

    def sample(self, elapsed):
        for name, proc in sorted(self.procs.items()):
            if proc.poll() is None:
                try:
                    stats = bench.proc_stats(proc.pid)
                except OSError:
                    continue
                self.samples[name].append(dict(
                    t=round(elapsed), pid=proc.pid,
                    cpu_s=round(stats['cpu'], 2),
                    peak_rss_mb=round(stats['peak_rss_mb'], 1),
                    threads=stats['threads']))

    def stop_all(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def memory_growth(samples):
    """Peak RSS growth of each process life, after its first sample.

    :param samples: one launcher's samples, oldest first.
    :returns: ``{pid: megabytes}`` for the lives sampled three times or
        more (the first sample is the warm-up).
    """
    lives = collections.defaultdict(list)
    for sample in samples:
        lives[sample['pid']].append(sample['peak_rss_mb'])
    return {pid: round(rss[-1] - rss[1], 1)
            for pid, rss in lives.items() if len(rss) >= 3}


# The invariants

class Violation(Exception):
    """An invariant does not hold; ``evidence`` says where."""

    def __init__(self, kind, message, node=None, instance=None, **extra):
        super().__init__('%s: %s' % (kind, message))
        self.evidence = dict(kind=kind, message=message, node=node,
                             instance=instance, **extra)


def two_alive(history):
    """The first node that had two instances alive at once, or None.

    :param history: the fake cloud's ``instance_history()`` rows.
    :returns: ``(node_id, [rows])``.
    """
    by_node = collections.defaultdict(list)
    for row in history:
        if row['node_id']:
            by_node[row['node_id']].append(row)
    for node_id, rows in by_node.items():
        rows.sort(key=lambda r: r['created'])
        for before, after in zip(rows, rows[1:]):
            if before['gone_at'] is None or \
                    before['gone_at'] > after['created']:
                return node_id, rows
    return None


def unowned(instances, nodes):
    """External ids of the live instances that no node owns.

    An instance is owned by the node of its tag when that node records it,
    or records none yet, or is still building (a retried attempt).
    """
    found = []
    for instance in instances:
        node = nodes.get(instance.node_id)
        if node is None or (node['external_id'] not in (
                None, instance.external_id)
                and node['state'] != node_states.BUILDING):
            found.append(instance.external_id)
    return found


def instance_lost(nodes, instances):
    """Ready or in-use nodes whose instance the cloud does not list."""
    live = {instance.external_id for instance in instances}
    return [node for node in nodes
            if node['state'] in (node_states.READY, node_states.IN_USE)
            and node['external_id'] not in live]


def spare(node):
    """Whether a node is ready and no request's."""
    return node['state'] == node_states.READY and node['request_id'] is None


def overdue(nodes, now, limits):
    """Nodes in a state of ``limits`` for longer than its limit."""
    return [node for node in nodes
            if node['state'] in limits
            and now - node['state_time'] > limits[node['state']]]


class Checker:
    """The soak's invariants, against the cloud's history and the database.

    Each :meth:`check` raises :class:`Violation` for the first one that
    fails; ``checks`` counts the invariants checked.
    """

    def __init__(self, ctx, cloud, limits, leak_grace, max_logbook_rows):
        self.ctx = ctx
        self.cloud = cloud
        self.limits = limits
        self.leak_grace = leak_grace
        self.max_logbook_rows = max_logbook_rows
        self.checks = 0
        #: instance -> when it was first seen owned by no node
        self.unowned_since = {}
        #: node -> the request it was handed to
        self.handed = {}

    def check(self, requests, nodes, now):
        """Check every invariant once.

        :param requests: the soak's :class:`Requests`.
        :param nodes: every node row, by id, read after the requests.
        """
        self._instances(nodes, now)
        self._nodes(nodes, now)
        self._requests(requests, nodes)
        self._logbooks()

    def _count(self, number=1):
        self.checks += number

    def _instances(self, nodes, now):
        history = self.cloud.instance_history()
        found = two_alive(history)
        self._count(len(history))
        if found:
            node_id, rows = found
            raise Violation('two-instances', 'node %s had two instances '
                            'alive at once' % node_id, node=node_id,
                            instances=rows)
        # Listed after the nodes were read: a node read ready or in use
        # still is (only the soak releases them).
        live = self.cloud.list_instances()
        for node in instance_lost(nodes.values(), live):
            raise Violation('instance-lost', 'node %s is %s, its instance '
                            '%s is gone' % (node['id'], node['state'],
                                            node['external_id']),
                            node=node['id'], instance=node['external_id'])
        orphans = set(unowned(live, nodes))
        self._count(len(live) + len(nodes))
        self.unowned_since = {i: self.unowned_since.get(i, now)
                              for i in orphans}
        for instance, since in self.unowned_since.items():
            if now - since > self.leak_grace:
                node = next(i.node_id for i in live
                            if i.external_id == instance)
                raise Violation('leak', 'instance %s owned by no node for '
                                '%.0f s' % (instance, now - since),
                                node=node, instance=instance)

    def _nodes(self, nodes, now):
        self._count(len(nodes))
        for node in overdue(nodes.values(), now, self.limits):
            raise Violation('stuck', 'node %s %s for %.0f s (limit %.0f s)'
                            % (node['id'], node['state'],
                               now - node['state_time'],
                               self.limits[node['state']]),
                            node=node['id'], instance=node['external_id'])

    def _requests(self, requests, nodes):
        by_request = collections.defaultdict(list)
        for node in nodes.values():
            if node['request_id']:
                by_request[node['request_id']].append(node)
        for request in requests.newly(models.FULFILLED):
            given = request.get('given')
            if given is None:
                given = [(n['id'], n['label'],
                          n['state'] == node_states.IN_USE)
                         for n in by_request[request['id']]]
            self.handed_over(request, given)
        for request in requests.newly(models.REQUEST_FAILED):
            self._count()
            if not request['reason']:
                raise Violation('failed-without-reason', 'request %s '
                                'failed without a reason' % request['id'],
                                request=request)
        for request_id in requests.lost:
            raise Violation('request-lost', 'request %s is gone, and was '
                            'not released' % request_id, request=request_id)

    def handed_over(self, request, given):
        """A fulfilled request has a node of each label, its own alone.

        :param given: ``(node id, label, in the state it should be)`` of
            each node the request was given.
        """
        self._count()
        if sorted(label for _, label, _ in given) != sorted(
                request['labels']) or not all(ok for _, _, ok in given):
            raise Violation('fulfilled-wrong', 'request %s fulfilled with '
                            '%s' % (request['id'], given),
                            node=given[0][0] if given else None,
                            request=request)
        for node_id, _label, _ok in given:
            other = self.handed.setdefault(node_id, request['id'])
            if other != request['id']:
                raise Violation('handed-twice', 'node %s handed to '
                                'requests %s and %s' % (
                                    node_id, other, request['id']),
                                node=node_id)

    def _logbooks(self):
        with self.ctx.engine.connect() as conn:
            rows = conn.execute(sa.text(
                'SELECT f.parent_uuid, count(DISTINCT f.uuid), '
                'count(a.uuid) FROM flowdetails f LEFT JOIN atomdetails a '
                'ON a.parent_uuid = f.uuid GROUP BY f.parent_uuid')).all()
        self._count(len(rows))
        for node_id, flows, atoms in rows:
            if flows + atoms > self.max_logbook_rows:
                raise Violation('logbook-rows', 'node %s has %d flows and '
                                '%d atoms in its logbook' % (
                                    node_id, flows, atoms), node=node_id)

    def evidence(self, violation, launchers):
        """The violation's evidence, with the node's row and histories."""
        evidence = dict(violation.evidence)
        node_id = evidence.get('node')
        if node_id:
            with contextlib.suppress(Exception):
                evidence['node_row'] = self.ctx.store.find_node(node_id)
            with contextlib.suppress(Exception):
                evidence['flows'] = flowinfo.describe_flows(self.ctx,
                                                            node_id)
            evidence['cloud_history'] = [
                row for row in self.cloud.instance_history()
                if row['node_id'] == node_id]
            evidence['logs'] = {
                name: launchers.log_tail(name, 60, match=node_id)
                for name in launchers.procs}
        return evidence


class Drain:
    """Tells a backlog still being served from a hang, at the soak's end.

    The drain fails when nothing finished for ``stall`` seconds, or when it
    lasts longer than ``bound``: twice the time its starting ``backlog`` of
    requests takes at the run's measured ``throughput`` (requests settled a
    second), plus ``grace``.
    """

    def __init__(self, start, backlog, throughput, grace, stall):
        self.start = start
        self.backlog = backlog
        self.bound = grace + (2 * backlog / throughput if throughput else 0)
        self.stall = stall
        self.finished = 0
        self.last_finished = start

    def verdict(self, now, finished):
        """Why the drain failed, or None while it may go on.

        :param finished: how many requests settled or were released, and
            nodes went, since the soak began (it only grows).
        """
        if finished > self.finished:
            self.finished = finished
            self.last_finished = now
        if now - self.last_finished > self.stall:
            return 'nothing finished for %.0f s' % (now - self.last_finished)
        if now - self.start > self.bound:
            return 'still draining after %.0f s (bound %.0f s: %d requests ' \
                'at the measured throughput, plus grace)' % (
                    now - self.start, self.bound, self.backlog)
        return None


class Requests:
    """The soak's requests: submitted, watched, released after a hold."""

    def __init__(self, store, rng, args):
        self.store = store
        self.rng = rng
        self.args = args
        self.mine = {}
        self.release_at = {}
        self.outcomes = collections.Counter()
        self.lost = []
        self._new = collections.defaultdict(list)
        self._next = time.time()

    def submit_due(self, now):
        while self._next <= now:
            size = self.rng.randint(1, self.args.max_size)
            labels = [self.rng.choice(self.args.labels)
                      for _ in range(size)]
            request = self.create(labels)
            self.mine[request['id']] = request
            self.outcomes['submitted'] += 1
            self._next += self.rng.expovariate(self.args.rate)

    def create(self, labels):
        return self.store.create_request(labels, requestor='soak')

    def stop_submitting(self):
        self._next = float('inf')

    def refresh(self, now):
        """Read the requests; note what changed."""
        rows = {r['id']: r for r in self.store.list_requests()}
        for request_id, old in list(self.mine.items()):
            row = rows.get(request_id)
            if row is None:
                self.lost.append(request_id)
                del self.mine[request_id]
                continue
            if row['state'] != old['state']:
                self.settled(row, now)
            self.mine[request_id] = row

    def settled(self, row, now):
        """Note a request that reached ``row['state']``; hold it."""
        if row['state'] in (models.FULFILLED, models.REQUEST_FAILED):
            self._new[row['state']].append(row)
            self.outcomes[row['state']] += 1
            hold = self.rng.uniform(*self.args.hold) \
                if row['state'] == models.FULFILLED else 0
            self.release_at[row['id']] = now + hold

    def newly(self, state):
        """The requests that reached ``state`` since the last call."""
        found, self._new[state] = self._new[state], []
        return found

    def release_due(self, now):
        for request_id, when in list(self.release_at.items()):
            if when <= now:
                self.release(request_id)
                del self.release_at[request_id]
                del self.mine[request_id]
                self.outcomes['released'] += 1

    def release(self, request_id):
        self.store.release_request(request_id)

    def release_all(self):
        for request_id in self.release_at:
            self.release_at[request_id] = 0

    def unsettled(self):
        return [r for r in self.mine.values()
                if r['state'] in (models.REQUESTED, models.PENDING)]


class ZuulRequests(Requests):
    """Requests made through the ZooKeeper front end, as Zuul makes them.

    Nodepool's own client plays Zuul in a child process
    (:class:`fleetflow.bench.zk_requester.Requester`): it writes each
    NodeRequest; once fulfilled, it locks the nodes and deletes the
    request (as Zuul's executor does); after the hold it marks them in
    use, then used, and unlocks them. A failed request is deleted.

    :param new_requester: makes a requester (a new ZooKeeper session).
    """

    def __init__(self, new_requester, rng, args):
        super().__init__(None, rng, args)
        self.new_requester = new_requester
        self.zuul = new_requester()
        #: request -> the node znodes it holds the lock of
        self.held = {}
        #: whether ZooKeeper is down: Zuul's side waits
        self.paused = False

    def call(self, op, **args):
        return self.zuul.call(op, answer_within=CALL_TIMEOUT, **args)

    def submit_due(self, now):
        if not self.paused:
            super().submit_due(now)

    def release_due(self, now):
        if not self.paused:
            super().release_due(now)

    def create(self, labels):
        # Asked before, connected: a session expires only after ZooKeeper
        # was unreachable for seconds, and the request is made at once.
        session = self.call('session')
        request_id = self.call('request', labels=labels, requestor='soak')
        return {'id': request_id, 'labels': labels,
                'state': models.REQUESTED, 'session': session}

    def refresh(self, now):
        if self.paused:
            return
        for request_id, old in list(self.mine.items()):
            if request_id in self.release_at:
                continue
            data = self.call('request_data', id=request_id)
            if data is None:
                if self.session_lives(old):
                    self.lost.append(request_id)
                else:
                    self.outcomes['abandoned'] += 1
                del self.mine[request_id]
                continue
            row = dict(old, state=data['state'])
            if data['state'] == models.FULFILLED:
                nodes = self.call('accept', id=request_id)
                self.held[request_id] = [node['id'] for node in nodes]
                row['given'] = [
                    (node['id'], _label(node['type']),
                     node['state'] == 'ready'
                     and node['allocated_to'] == request_id)
                    for node in nodes]
            elif data['state'] == models.REQUEST_FAILED:
                self.call('accept', id=request_id)
                row['reason'] = ', '.join(data.get('declined_by') or ())
            if row['state'] != old['state']:
                self.settled(row, now)
            self.mine[request_id] = row

    def session_lives(self, request):
        """Whether the ZooKeeper session that made ``request`` lives on.

        A session that expired (ZooKeeper down for longer than its
        timeout) took its requests (ephemeral znodes) and node locks with
        it, as when Zuul loses its session; the requester goes on in a new
        one.
        """
        return request['session'] == self.call('session')

    def release(self, request_id):
        """Use the request's nodes and give them back, one by one.

        A call that fails (ZooKeeper unreachable) is made again at the
        next :meth:`release_due`, for the nodes not given back yet.
        """
        nodes = self.held.get(request_id, [])
        if nodes and self.session_lives(self.mine[request_id]):
            self.call('use', nodes=nodes)
            while nodes:
                self.call('give_back', nodes=nodes[:1])
                nodes.pop(0)
        self.held.pop(request_id, None)

    def lose_session(self):
        """End the requester's session without a word.

        Its requests and node locks vanish; a new requester takes its
        place.
        """
        if self.zuul.proc.poll() is None:
            with contextlib.suppress(zk_requester.RequesterError, OSError):
                self.call('drop')
        self.zuul.kill()
        self.zuul.close()
        self.zuul = self.new_requester()
        self.outcomes['abandoned'] += len(self.mine)
        self.mine.clear()
        self.held.clear()
        self.release_at.clear()

    def close(self):
        self.zuul.close()


def _label(node_type):
    """A node znode's label (nodepool writes a list of one)."""
    return node_type[0] if isinstance(node_type, list) else node_type


# The soak

class Soak:

    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.rng = random.Random(args.seed)
        self.started = time.time()
        self.process_faults = collections.Counter()
        self.restarts = 0
        #: launchers that exited as a server was restarted
        self.start_failures = 0
        self.timers = []
        #: per fault: (time, host, node ids it had under way)
        self.recoveries = []
        self.recovered = []
        self.windows = []
        self.db_errors = 0
        self.cleanups = []
        self.server = None
        #: node rows at the last check, by id
        self.nodes = {}
        #: nodes gone (deleted) since the soak began
        self.nodes_gone = 0
        self.drain = None

    def elapsed(self):
        return time.time() - self.started

    def setup(self):
        args = self.args
        db_url = hosts = zookeeper = None
        namespace = 'soak-%s' % uuid.uuid4().hex[:8]
        if args.mode == 'frontend':
            self.python = os.path.join(args.nodepool_client, 'bin', 'python')
            if not os.path.exists(self.python):
                raise SystemExit('soak: no nodepool client at %s (run '
                                 'tools/nodepool-client-venv)'
                                 % args.nodepool_client)
            self.tls = tuple(os.path.join(args.tls_dir, name) for name in
                             ('client.pem', 'client.key', 'ca.pem'))
            self.server = Server('zookeeper', self.tmp, args.tls_dir)
            self.server.start()
            self.cleanups.append(self.server.stop)
            zookeeper = zk_requester.layout_keys(self.server.hosts,
                                                 self.tls, CHROOT)
        elif args.mode != 'single':
            db_url, drop = bench.new_schema(args.database)
            self.cleanups.append(drop)
            if Server.available(args.mode):
                self.server = Server(args.mode, self.tmp)
                self.server.start()
                self.cleanups.append(self.server.stop)
                hosts = self.server.hosts
            else:
                hosts = {'redis': '127.0.0.1:6379',
                         'zookeeper': '127.0.0.1:2181'}[args.mode]
                self.cleanups.append(lambda: bench.drop_namespace(
                    argparse.Namespace(jobboard=args.mode,
                                       jobboard_hosts=hosts), namespace))
        provider = self.write_layout(zookeeper)
        names = ['soak-%d' % (i + 1) for i in range(args.launchers)]
        configs = {name: self.write_config(name, db_url, namespace,
                                           hosts if db_url else None)
                   for name in names}
        conf = cfg.ConfigOpts()
        ff_conf.setup(conf, ['--config-file', configs[names[0]]])
        self.ctx = ff_context.Context(conf)
        migration.upgrade(self.ctx.engine)
        self.cloud = fake.FakeDriver(provider, conf)
        self.launchers = Launchers(self.tmp, configs)
        if zookeeper:
            self.requests = ZuulRequests(self.new_requester, self.rng, args)
            self.cleanups.append(self.requests.close)
        else:
            self.requests = Requests(self.ctx.store, self.rng, args)
        attempt = self.launch_timeout + self.boot_timeout
        self.checker = Checker(
            self.ctx, self.cloud,
            dict({node_states.BUILDING: 3 * attempt + args.slack,
                  node_states.DELETING: 30 + 5 + args.slack},
                 # What waits for its delete flow to start.
                 **dict.fromkeys((node_states.USED, node_states.FAILED,
                                  node_states.ABORTED), 30 + args.slack)),
            leak_grace=2 * args.cleanup_interval + args.slack,
            max_logbook_rows=args.max_logbook_rows)
        self.kinds = [kind for kind in args.process_faults
                      if args.mode in PROCESS_FAULTS[kind]]
        if self.server is None:
            self.kinds = [kind for kind in self.kinds
                          if kind not in ('board-restart',
                                          'zookeeper-restart')]
        if 'postgresql-restart' in self.kinds and not (
                args.restart_postgresql and os.geteuid() == 0):
            self.kinds.remove('postgresql-restart')
        for name in names:
            self.launchers.start(name)

    launch_timeout = 30
    boot_timeout = 10

    def new_requester(self):
        """Zuul's side: nodepool's client in a child process."""
        with open(os.path.join(self.tmp, 'requester.log'), 'a') as log:
            return zk_requester.Requester(
                self.python, self.server.hosts + CHROOT, self.tls,
                timeout=10, stderr=log)

    def write_layout(self, zookeeper=None):
        """The layout; ``zookeeper``: the front end's keys."""
        args = self.args
        provider = {
            'name': PROVIDER, 'driver': 'fake',
            'state-path': os.path.join(self.tmp, 'cloud.sqlite'),
            'create-latency': args.create_latency,
            'delete-latency': args.delete_latency,
            'rate-limit-delay': 1.0, 'launch-retries': 3,
            'launch-timeout': self.launch_timeout,
            'boot-timeout': self.boot_timeout, 'faults': args.fault,
            'pools': [{'name': 'main', 'max-servers': args.max_servers,
                       'host-key-checking': False,
                       'labels': [{'name': label}
                                  for label in args.labels]}]}
        with open(os.path.join(self.tmp, 'layout.yaml'), 'w') as f:
            yaml.safe_dump(dict({'labels': [{'name': label}
                                            for label in args.labels],
                                 'providers': [provider]},
                                **(zookeeper or {})), f)
        return provider

    def write_config(self, name, db_url, namespace, hosts):
        args = self.args
        state = os.path.join(self.tmp, name if db_url else 'state')
        os.makedirs(state, exist_ok=True)
        lines = ['[DEFAULT]', 'host = %s' % name, 'state_path = %s' % state,
                 '[launcher]',
                 'layout_file = %s' % os.path.join(self.tmp, 'layout.yaml'),
                 'workers = %d' % args.workers, 'request_interval = 1',
                 'instance_refresh_interval = 0.2', 'poll_attempt = 1',
                 'cleanup_interval = %s' % args.cleanup_interval,
                 'delete_timeout = 30', 'delete_retry_interval = 5',
                 'aborted_request_delay = 1']
        if db_url:
            lines += ['[database]', 'connection = %s' % db_url,
                      '[jobboard]', 'enabled = true',
                      'backend = %s' % args.mode, 'hosts = %s' % hosts,
                      'namespace = %s' % namespace,
                      'claim_expiry = %d' % args.claim_expiry,
                      'conductor_workers = %d' % args.workers]
        if args.mode == 'frontend':
            lines += ['[zookeeper]', 'interval = 0.2',
                      'cleanup_interval = 2']
        path = os.path.join(self.tmp, '%s.conf' % name)
        with open(path, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        return path

    # Faults

    def later(self, delay, action, *args):
        self.timers.append((time.time() + delay, action, args))

    def run_timers(self, now):
        due = [t for t in self.timers if t[0] <= now]
        self.timers = [t for t in self.timers if t[0] > now]
        for _when, action, args in due:
            action(*args)

    def next_fault(self):
        return time.time() + self.rng.expovariate(
            1 / self.args.fault_interval)

    def inject(self):
        """Inject one process or infrastructure fault, chosen at random."""
        kind = self.rng.choice(self.kinds)
        up = self.launchers.up()
        if kind in ('sigkill', 'sigterm', 'sigstop'):
            if not up:
                return
            name = self.rng.choice(up)
            self.note_under_way(name)
            getattr(self, kind.replace('sig', 'do_sig'))(name)
        elif self.busy_server:
            return
        elif kind in ('board-restart', 'zookeeper-restart'):
            self.busy_server = True
            self.servers_down(float('inf'))
            self.server.stop()
            self.later(self.rng.uniform(1, 5), self.server_back)
        elif kind == 'postgresql-restart':
            restart_postgresql(self.args.database)
            self.servers_down(time.time() + SERVER_GRACE)
        elif kind == 'session-loss':
            self.requests.lose_session()
        self.process_faults[kind] += 1
        self.log('fault %s' % kind)

    busy_server = False

    def server_back(self):
        # The launchers reconnect when it answers; the soak goes on.
        self.server.start(wait=False)
        self.busy_server = False
        self.servers_down(time.time() + SERVER_GRACE)

    def servers_down(self, until):
        """A server the soak restarts may not answer until ``until``.

        Launchers may give up on it meanwhile, and requests made through
        it may vanish with their requester's session.
        """
        self.servers_down_until = until
        if isinstance(self.requests, ZuulRequests):
            self.requests.paused = until == float('inf')

    #: until when a launcher may give up for a server the soak restarted
    servers_down_until = 0

    def do_sigkill(self, name):
        self.launchers.signal(name, signal.SIGKILL)
        self.later(self.rng.uniform(0.5, 5), self.restart, name)

    def do_sigterm(self, name):
        self.launchers.signal(name, signal.SIGTERM)
        self.later(0.5, self.restart_after_stop, name, time.time() + 60)

    def restart_after_stop(self, name, deadline):
        proc = self.launchers.procs[name]
        if proc.poll() is None:
            if time.time() < deadline:
                self.later(0.5, self.restart_after_stop, name, deadline)
                return
            raise Violation('no-stop', 'launcher %s did not stop within '
                            '60 s of SIGTERM' % name,
                            log=self.launchers.log_tail(name))
        # A process signalled before it set its handler dies of it.
        if proc.returncode not in (0, -signal.SIGTERM):
            raise Violation('unclean-stop', 'launcher %s exited with %s on '
                            'SIGTERM' % (name, proc.returncode),
                            log=self.launchers.log_tail(name))
        self.restart(name)

    def do_sigstop(self, name):
        self.launchers.frozen.add(name)
        self.launchers.signal(name, signal.SIGSTOP)
        self.later(self.args.claim_expiry + self.rng.uniform(1, 6),
                   self.thaw, name)

    def thaw(self, name):
        self.launchers.signal(name, signal.SIGCONT)
        self.launchers.frozen.discard(name)

    def restart(self, name):
        self.launchers.start(name)
        self.restarts += 1

    def note_under_way(self, name):
        """Remember the flows ``name`` has under way when it is hit."""
        nodes = self.ctx.store.list_nodes(states=list(LIVE_NODE))
        under_way = {n['id']: n['state'] for n in nodes
                     if self.args.launchers == 1 or n['launcher'] == name}
        self.recoveries.append((time.time(), name, under_way))

    def track_recoveries(self, nodes, now):
        """Close the faults whose flows have all moved on."""
        open_ = []
        for when, name, under_way in self.recoveries:
            left = {node_id: state for node_id, state in under_way.items()
                    if node_id in nodes
                    and nodes[node_id]['state'] == state}
            if left:
                open_.append((when, name, left))
            else:
                self.recovered.append(now - when)
        self.recoveries = open_

    # The loop

    def log(self, message):
        print('[soak %6.1f s] %s' % (self.elapsed(), message),
              file=sys.stderr, flush=True)

    def check(self):
        now = time.time()
        self.requests.refresh(now)
        nodes = {n['id']: n for n in self.ctx.store.list_nodes()}
        self.nodes_gone += len(self.nodes.keys() - nodes.keys())
        self.nodes = nodes
        self.track_recoveries(nodes, now)
        self.checker.check(self.requests, nodes, now)
        for name, code in sorted(self.launchers.unexpected_exits().items()):
            if now > self.servers_down_until:
                raise Violation('launcher-exited', 'launcher %s exited '
                                'with %s' % (name, code),
                                log=self.launchers.log_tail(name))
            # It could not reach a server the soak restarts, and gave up:
            # started again, as a service manager would.
            self.start_failures += 1
            self.restart(name)
        late = self.launchers.not_started(START_LIMIT)
        if late and now > self.servers_down_until:
            raise Violation('no-start', 'launcher(s) did not start within '
                            '%d s: %s' % (START_LIMIT, late),
                            log={name: self.launchers.log_tail(name)
                                 for name in late})
        return nodes

    def sample(self):
        """One throughput and resource window."""
        made = len(self.cloud.instance_history())
        fulfilled = self.requests.outcomes[models.FULFILLED]
        self.windows.append(dict(
            t=round(self.elapsed()), fulfilled=fulfilled - self._last[0],
            launches=made - self._last[1],
            queued=len(self.requests.unsettled()),
            busy_nodes=sum(not spare(n) for n in self.nodes.values())))
        self.launchers.sample(self.elapsed())
        self._last = fulfilled, made

    #: requests fulfilled and instances made at the last sample
    _last = (0, 0)
    #: ready nodes of no request left at the end
    spares_left = 0

    def loop(self, until, inject=True):
        """Run until ``until`` (a time, or a predicate of the node rows)."""
        next_fault = self.next_fault()
        next_check = 0
        next_sample = time.time() + self.args.window
        db_down_since = None
        while True:
            now = time.time()
            self.run_timers(now)
            if inject and now >= next_fault and self.kinds:
                self.inject()
                next_fault = self.next_fault()
            try:
                self.requests.submit_due(now)
                self.requests.release_due(now)
                if now >= next_check:
                    nodes = self.check()
                    next_check = now + self.args.check_interval
                    if until(nodes):
                        return
                db_down_since = None
            except (sa.exc.DBAPIError, zk_requester.RequesterError) as e:
                # A server restarted; the launchers see it too.
                self.db_errors += 1
                if isinstance(e, zk_requester.RequesterError) and \
                        self.requests.zuul.proc.poll() is not None:
                    self.requests.lose_session()
                db_down_since = db_down_since or now
                if now - db_down_since > 120:
                    raise Violation('server', 'the database or ZooKeeper '
                                    'did not answer for 120 s: %s' % e)
            if now >= next_sample:
                self.sample()
                next_sample = now + self.args.window
            time.sleep(0.1)

    def run(self):
        args = self.args
        self.log('seed %d; mode %s; %d launcher(s); process faults: %s'
                 % (args.seed, args.mode, args.launchers,
                    ', '.join(self.kinds) or 'none'))
        end = self.started + args.duration
        self.loop(lambda nodes: time.time() >= end)
        self.run_drain()

    def run_drain(self):
        """The end: no more faults or requests.

        Everything down comes back, every request settles, is released,
        and its nodes go; a backlog may take its time while it shrinks.
        """
        args = self.args
        self.requests.stop_submitting()
        outcomes = self.requests.outcomes
        settled_so_far = outcomes[models.FULFILLED] + \
            outcomes[models.REQUEST_FAILED]
        self.drain = Drain(time.time(), len(self.requests.unsettled()),
                           settled_so_far / self.elapsed(),
                           args.drain_timeout, args.drain_stall)
        self.log('draining %d queued requests (bound %.0f s)'
                 % (self.drain.backlog, self.drain.bound))

        def settled(nodes):
            if not self.requests.unsettled():
                self.requests.release_all()
            # Ready spares stay, to be reused (a request served again
            # after an abort leaves the ready nodes it had).
            busy = sorted(node_id for node_id, node in nodes.items()
                          if not spare(node))
            why = self.drain.verdict(time.time(), self.finished())
            if why:
                raise Violation('not-drained', '%s: requests %s, nodes %s'
                                % (why, [r['id'] for r in
                                         self.requests.unsettled()], busy))
            self.spares_left = len(nodes) - len(busy)
            return not (self.timers or self.requests.mine or busy
                        or len(self.cloud.list_instances())
                        > self.spares_left)

        self.loop(settled, inject=False)
        self.check()

    def finished(self):
        """Requests settled or let go, and nodes gone, so far."""
        outcomes = self.requests.outcomes
        return sum(outcomes[kind] for kind in (
            models.FULFILLED, models.REQUEST_FAILED, 'released',
            'abandoned')) + self.nodes_gone

    def figures(self, violation=None):
        outcomes = self.requests.outcomes
        samples = self.launchers.samples
        growth = {name: memory_growth(s) for name, s in samples.items()}
        return {
            'mode': self.args.mode,
            'seed': self.args.seed,
            'duration_s': round(self.elapsed(), 1),
            'launchers': self.args.launchers,
            'requests_submitted': outcomes['submitted'],
            'requests_fulfilled': outcomes[models.FULFILLED],
            'requests_failed': outcomes[models.REQUEST_FAILED],
            'requests_abandoned': outcomes['abandoned'],
            'launches': len(self.cloud.instance_history()),
            'cloud_faults': self.cloud.fault_counts(),
            'process_faults': dict(self.process_faults),
            'restarts': self.restarts,
            'spares_left': self.spares_left,
            'drain_backlog': self.drain and self.drain.backlog,
            'drain_bound_s': self.drain and round(self.drain.bound, 1),
            'drain_s': self.drain and round(time.time() - self.drain.start,
                                            1),
            'max_queued': max((w['queued'] for w in self.windows),
                              default=0),
            'start_failures': self.start_failures,
            'invariant_checks': self.checker.checks,
            'violations': 0 if violation is None else 1,
            'violation': violation,
            'max_fault_to_flows_moved_on_s': round(
                max(self.recovered), 1) if self.recovered else None,
            'faults_not_recovered': len(self.recoveries),
            'server_errors': self.db_errors,
            'throughput': self.windows,
            'launcher_samples': dict(samples),
            'max_rss_growth_mb': max(
                (g for lives in growth.values() for g in lives.values()),
                default=None),
        }


def print_table(result):
    scalars = {k: v for k, v in result.items()
               if not isinstance(v, (list, dict)) or k in (
                   'cloud_faults', 'process_faults')}
    width = max(len(k) for k in scalars)
    for key, value in scalars.items():
        print('%-*s  %s' % (width, key, value))
    print('\nwindow  fulfilled  launches  queued  busy-nodes')
    for window in result['throughput']:
        print('%5ds  %9d  %8d  %6d  %10d' % (
            window['t'], window['fulfilled'], window['launches'],
            window['queued'], window['busy_nodes']))
    print('\nlauncher  t(s)  pid      cpu(s)  peak-rss(MB)  threads')
    for name, samples in sorted(result['launcher_samples'].items()):
        for s in samples:
            print('%-8s %5d  %-7d  %6.1f  %12.1f  %7d' % (
                name, s['t'], s['pid'], s['cpu_s'], s['peak_rss_mb'],
                s['threads']))


def main(argv=None):
    args = parse_args(argv)
    tmp = tempfile.mkdtemp(prefix='fleetflow-soak-')
    soak = Soak(args, tmp)
    violation = None
    try:
        soak.setup()
        try:
            soak.run()
        except Violation as e:
            violation = soak.checker.evidence(e, soak.launchers)
            soak.log('VIOLATION %s' % e)
        result = soak.figures(violation)
    finally:
        if hasattr(soak, 'launchers'):
            soak.launchers.stop_all()
        for cleanup in reversed(soak.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        if args.keep or violation:
            print('state and logs kept in %s' % tmp, file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, default=str))
    print_table(result)
    return 1 if violation else 0
