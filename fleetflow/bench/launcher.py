"""Benchmark the real launcher process against the fake cloud.

Starts ``fleetflow-launcher`` on a fresh state directory (fake driver,
SQLite), submits N one-node requests at once through the Python client
API, releases every node once all requests are fulfilled, and reports:
request-to-fulfilled median and p95 (from the timestamps the launcher
recorded), the time until every released node was deleted, the launcher's
CPU seconds and peak RSS (from /proc), its peak thread count, the cloud
API calls made (counted by the fake cloud) and the database transactions
per node.

Several launchers (``--launchers N``) share one database (``--database
URL``: a PostgreSQL URL gets a schema of its own for the run) and one
jobboard (``--jobboard redis|zookeeper`` on ``--jobboard-hosts``, a
namespace of its own), each launcher serving requests and conducting
flows; their CPU, threads and transactions are summed. ``--compare`` runs
the same load with one launcher first, then with N, and reports both.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

from oslo_config import cfg
import yaml

from fleetflow.bench import zk_requester
from fleetflow import client as ff_client
from fleetflow import cmd
from fleetflow import conf as ff_conf
from fleetflow.db import api as db_api
from fleetflow.db import migration
from fleetflow.drivers import fake

CLK_TCK = os.sysconf('SC_CLK_TCK')


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='fleetflow-bench launcher', description=__doc__.split('\n')[0])
    cmd.add_version_argument(parser)
    parser.add_argument('-n', '--nodes', type=int, default=100,
                        help='one-node requests submitted at once')
    parser.add_argument('--create-latency', type=float, default=0.1)
    parser.add_argument('--delete-latency', type=float, default=0.0)
    parser.add_argument('--fault', action='append', default=[],
                        metavar='KIND=RATE',
                        help='fake cloud fault rate, e.g. create-error=0.1')
    parser.add_argument('--keyscan', action='store_true',
                        help='scan SSH host keys (of an SSH server the '
                             'benchmark starts on loopback)')
    parser.add_argument('--persistence', choices=('sql', 'memory'),
                        default='sql')
    parser.add_argument('--refresh-interval', type=float,
                        help='[launcher] instance_refresh_interval (default: '
                             'the launcher\'s)')
    parser.add_argument('--list-floor', type=float,
                        help='[launcher] instance_list_floor (default: the '
                             'launcher\'s)')
    parser.add_argument('--workers', type=int, default=16)
    parser.add_argument('--flow-processes', type=int,
                        help='[launcher] flow_processes (default: the '
                             'launcher\'s)')
    parser.add_argument('--launchers', type=int, default=1,
                        help='launcher processes on one database and one '
                             'jobboard (more than one implies --jobboard '
                             'redis)')
    parser.add_argument('--jobboard', choices=('redis', 'zookeeper'),
                        help='post flows on this jobboard and run them in '
                             'conductors')
    parser.add_argument('--jobboard-hosts', default='127.0.0.1',
                        help='host[:port] of the jobboard server')
    parser.add_argument('--database', metavar='URL',
                        help='database URL (default: SQLite in the state '
                             'directory); PostgreSQL gets a new schema')
    parser.add_argument('--compare', action='store_true',
                        help='run with one launcher, then with '
                             '--launchers, and report both')
    parser.add_argument('--zookeeper', metavar='HOST:PORT',
                        help='submit the requests through ZooKeeper (its '
                        'TLS port) with nodepool\'s own client, and return '
                        'the nodes as Zuul does (fleetflow/bench/'
                        'zk_requester.py)')
    parser.add_argument('--zookeeper-tls', metavar='DIR',
                        default='/etc/zookeeper/fleetflow-test-tls',
                        help='ca.pem, client.pem and client.key '
                        '(tools/test-tls)')
    parser.add_argument('--nodepool-client', metavar='PYTHON',
                        default='.nodepool-client/bin/python',
                        help='the python of tools/nodepool-client-venv')
    parser.add_argument('--nodepool', action='store_true',
                        help='run the same load on nodepool 11.0.0 too (from '
                             '--nodepool-venv, made by tools/nodepool-venv) '
                             'and report both')
    parser.add_argument('--nodepool-venv', default='.nodepool-venv',
                        help='the virtualenv that holds nodepool')
    parser.add_argument('--timeout', type=float, default=600)
    parser.add_argument('--keep', action='store_true',
                        help='keep the state directory')
    args = parser.parse_args(argv)
    if args.launchers > 1 and args.jobboard is None:
        args.jobboard = 'redis'
    return args


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _one_process(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    status = {}
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            key, _, value = line.partition(':')
            status[key] = value.strip()
    if 'VmHWM' not in status:
        raise ProcessLookupError('process %d exited' % pid)
    pss = 0
    with open('/proc/%d/smaps_rollup' % pid) as f:
        for line in f:
            if line.startswith('Pss:'):
                pss = int(line.split()[1])
    return {'cpu': cpu, 'peak_rss_mb': int(status['VmHWM'].split()[0]) / 1024,
            'pss_mb': pss / 1024, 'threads': int(status['Threads'])}


def descendants(pid):
    """The pids of a process's children, theirs, and so on (now)."""
    found = []
    try:
        tasks = os.listdir('/proc/%d/task' % pid)
    except FileNotFoundError:
        return found   # it ended meanwhile
    for task in tasks:
        try:
            with open('/proc/%d/task/%s/children' % (pid, task)) as f:
                children = [int(child) for child in f.read().split()]
        except FileNotFoundError:
            continue   # a thread that ended meanwhile
        for child in children:
            found += [child] + descendants(child)
    return found


def proc_stats(pid):
    """CPU seconds, peak RSS, PSS and threads of a process and children.

    The figures of its child processes (a launcher's flow processes) are
    added to its own: the peak RSS is the sum of each one's peak, which
    counts the pages they share once per process; the PSS (now, not at
    the peak) counts each shared page once over all of them.

    :raises ProcessLookupError: it is gone, or a zombie (it has no memory
        left to measure).
    """
    try:
        total = _one_process(pid)
    except FileNotFoundError:
        raise ProcessLookupError('process %d exited' % pid)
    for child in descendants(pid):
        try:
            stats = _one_process(child)
        except (ProcessLookupError, FileNotFoundError):
            continue   # it exited meanwhile
        for key in total:
            total[key] += stats[key]
    return total


def write_config(tmp, args, port, name=None, db_url=None, namespace=None):
    faults = {}
    for item in args.fault:
        kind, _, rate = item.partition('=')
        faults[kind] = float(rate)
    provider = {'name': 'fake-1', 'driver': 'fake',
                'state-path': os.path.join(tmp, 'cloud.sqlite'),
                'create-latency': args.create_latency,
                'delete-latency': args.delete_latency,
                'launch-retries': 3, 'faults': faults,
                'pools': [{'name': 'main', 'max-servers': args.nodes * 2,
                           'host-key-checking': args.keyscan,
                           'labels': [{'name': 'small'}]}]}
    layout = {'labels': [{'name': 'small'}], 'providers': [provider]}
    if args.zookeeper:
        layout.update(zk_requester.layout_keys(
            args.zookeeper, zk_tls(args), args.zookeeper_chroot))
    with open(os.path.join(tmp, 'layout.yaml'), 'w') as f:
        yaml.safe_dump(layout, f)
    with open(os.path.join(tmp, '%s.conf' % (name or 'fleetflow')),
              'w') as f:
        f.write('[DEFAULT]\nstate_path = %s\n' % tmp)
        if name:
            f.write('host = %s\n' % name)
        f.write('[launcher]\nlayout_file = %s\nworkers = %d\n'
                % (os.path.join(tmp, 'layout.yaml'), args.workers))
        for option, value in (('instance_refresh_interval',
                               args.refresh_interval),
                              ('instance_list_floor', args.list_floor),
                              ('flow_processes', args.flow_processes)):
            if value is not None:
                f.write('%s = %s\n' % (option, value))
        f.write('[persistence]\nbackend = %s\n'
                '[status_api]\nenabled = true\nbind_port = %d\n'
                % (args.persistence, port))
        if db_url:
            f.write('[database]\nconnection = %s\n' % db_url)
        if args.jobboard:
            f.write('[jobboard]\nenabled = true\nbackend = %s\n'
                    'hosts = %s\nnamespace = %s\nconductor_workers = %d\n'
                    % (args.jobboard, args.jobboard_hosts, namespace,
                       args.workers))
    return provider


def health(port):
    with urllib.request.urlopen('http://127.0.0.1:%d/health' % port,
                                timeout=5) as response:
        return json.load(response)


def new_schema(url):
    """A PostgreSQL URL on a new schema, and the function that drops it."""
    import sqlalchemy as sa
    schema = 'bench_%s' % uuid.uuid4().hex[:12]
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text('CREATE SCHEMA %s' % schema))

    def drop():
        with admin.begin() as conn:
            conn.execute(sa.text('DROP SCHEMA %s CASCADE' % schema))
        admin.dispose()

    separator = '&' if '?' in url else '?'
    return ('%s%soptions=-csearch_path%%3D%s' % (url, separator, schema),
            drop)


def drop_namespace(args, namespace):
    """Remove what the run left on the jobboard server."""
    from oslo_utils import netutils
    if args.jobboard == 'redis':
        import redis
        host, port = netutils.parse_host_port(args.jobboard_hosts,
                                              default_port=6379)
        client = redis.Redis(host=host, port=port)
        keys = list(client.scan_iter(match=namespace + '*'))
        if keys:
            client.delete(*keys)
        client.close()
    elif args.jobboard == 'zookeeper':
        from kazoo import client as kazoo_client
        client = kazoo_client.KazooClient(hosts=args.jobboard_hosts)
        client.start(timeout=10)
        try:
            client.delete('/fleetflow/%s' % namespace, recursive=True)
        except Exception:
            pass
        client.stop()
        client.close()


def run(args):
    tmp = tempfile.mkdtemp(prefix='fleetflow-bench-')
    cleanups = []
    db_url = args.database
    if db_url and db_url.startswith('postgresql'):
        db_url, drop = new_schema(db_url)
        cleanups.append(drop)
    namespace = 'bench-%s' % uuid.uuid4().hex[:8]
    if args.jobboard:
        cleanups.append(lambda: drop_namespace(args, namespace))
    if args.zookeeper:
        args = argparse.Namespace(**dict(
            vars(args), zookeeper_chroot='/fleetflow-%s' % namespace))
        cleanups.append(lambda: zk_requester.drop_chroot(
            args.zookeeper, zk_tls(args), args.zookeeper_chroot))
    ports = [free_port() for _ in range(args.launchers)]
    names = ['bench-%d' % (i + 1) for i in range(args.launchers)] \
        if args.launchers > 1 else [None]
    for name, port in zip(names, ports):
        provider = write_config(tmp, args, port, name, db_url, namespace)
    config_files = [os.path.join(tmp, '%s.conf' % (name or 'fleetflow'))
                    for name in names]
    conf = cfg.ConfigOpts()
    ff_conf.setup(conf, ['--config-file', config_files[0]])
    engine = db_api.create_engine(ff_conf.database_url(conf))
    migration.upgrade(engine)
    engine.dispose()
    cloud = fake.FakeDriver(provider, conf)
    logs, procs = [], []
    for name, config_file in zip(names, config_files):
        log = open(os.path.join(tmp, '%s.log' % (name or 'launcher')), 'w')
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, '-m', 'fleetflow.cmd.launcher',
             '--config-file', config_file], stdout=log, stderr=log))
    try:
        return measure(args, conf, cloud, procs, ports)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        for log in logs:
            log.close()
        for cleanup in cleanups:
            cleanup()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print('state kept in %s' % tmp, file=sys.stderr)


def wait(predicate, timeout, what, sample=None):
    deadline = time.time() + timeout
    while not predicate():
        if sample is not None:
            sample()
        if time.time() > deadline:
            raise SystemExit('benchmark: timed out waiting for %s' % what)
        time.sleep(0.02)


def _sum_stats(procs):
    stats = [proc_stats(proc.pid) for proc in procs]
    return {'cpu': sum(s['cpu'] for s in stats),
            'peak_rss_mb': max(s['peak_rss_mb'] for s in stats),
            'pss_mb': max(s['pss_mb'] for s in stats),
            'threads': sum(s['threads'] for s in stats)}


class Peaks:
    """The peak threads and PSS of processes, as sampled while they run.

    The PSS is the largest of one launcher's (its flow processes'
    included), like the peak RSS.
    """

    def __init__(self, procs):
        self.procs = procs
        self.threads = 0
        self.pss_mb = 0.0
        self.sample()

    def sample(self):
        stats = _sum_stats(self.procs)
        self.threads = max(self.threads, stats['threads'])
        self.pss_mb = max(self.pss_mb, stats['pss_mb'])

    def figures(self):
        return {'peak_pss_mb': round(self.pss_mb, 1),
                'peak_threads': self.threads}


def _counters(ports):
    """Database transactions and flow parks, summed over the launchers."""
    answers = [health(port) for port in ports]
    return (sum(a['db_transactions'] for a in answers),
            sum(a['flow_parks'] for a in answers))


def measure(args, conf, cloud, procs, ports):
    wait(lambda: all(_answers(port) for port in ports), 60,
         'the launchers to start')
    start = _sum_stats(procs)
    transactions0, parks0 = _counters(ports)
    peaks = Peaks(procs)

    if args.zookeeper:
        figures = through_zookeeper(args, peaks.sample)
    else:
        figures = _through_client(args, conf, peaks.sample)
    end = _sum_stats(procs)
    transactions, parks = _counters(ports)
    transactions -= transactions0
    parks -= parks0
    calls = cloud.call_counts()
    return dict({
        'launchers': args.launchers,
        'jobboard': args.jobboard,
        'database': 'postgresql' if (args.database or '').startswith(
            'postgresql') else 'sqlite',
        'requester': 'zookeeper' if args.zookeeper else 'client',
        'nodes': args.nodes,
        'create_latency': args.create_latency,
        'persistence': args.persistence,
        'keyscan': args.keyscan,
    }, **latency_figures(args.nodes, **figures), **{
        'launcher_cpu_s': round(end['cpu'] - start['cpu'], 3),
        'peak_rss_mb': round(end['peak_rss_mb'], 1),
        **peaks.figures(),
        'cloud_calls': calls,
        'db_transactions_per_node': round(transactions / args.nodes, 1),
        'flow_parks_per_node': round(parks / args.nodes, 1),
    })


def latency_figures(nodes, latencies, all_fulfilled_s, all_deleted_s):
    """What a run's times say: fulfilled, failed, median, p95..."""
    return {
        'fulfilled': len(latencies),
        'failed': nodes - len(latencies),
        'median_fulfilled_s': round(statistics.median(latencies), 3)
        if latencies else None,
        'p95_fulfilled_s': round(latencies[int(0.95 * (len(latencies) - 1))],
                                 3) if latencies else None,
        'all_fulfilled_s': round(all_fulfilled_s, 3),
        'all_deleted_s': round(all_deleted_s, 3),
        'launches_per_s': round(len(latencies) / all_fulfilled_s, 1),
    }


def _through_client(args, conf, sample):
    """Requests through the Python client API, released once fulfilled."""
    client = ff_client.Client(conf)
    submitted = time.time()
    requests = [client.create_request(['small'], requestor='bench')
                for _ in range(args.nodes)]
    ids = [r['id'] for r in requests]

    def settled():
        rows = {r['id']: r for r in client.list_requests()}
        return all(rows[i]['state'] in ('fulfilled', 'failed') for i in ids)

    wait(settled, args.timeout, 'requests to be fulfilled', sample)
    rows = {r['id']: r for r in client.list_requests()}
    fulfilled = [rows[i] for i in ids if rows[i]['state'] == 'fulfilled']
    all_fulfilled = time.time() - submitted
    released = time.time()
    for request_id in ids:
        client.release_request(request_id)
    wait(lambda: not client.list_nodes(), args.timeout,
         'released nodes to be deleted', sample)
    client.close()
    return {'latencies': sorted(r['state_time'] - r['created_at']
                                for r in fulfilled),
            'all_fulfilled_s': all_fulfilled,
            'all_deleted_s': time.time() - released}


def through_zookeeper(args, sample):
    """NodeRequests by nodepool's client; nodes returned as Zuul does."""
    figures = zk_requester.run_bench(
        args.nodepool_client, args.zookeeper + args.zookeeper_chroot,
        zk_tls(args), args.nodes, 'small', args.timeout, sample)
    if figures['unanswered'] or figures['nodes_left']:
        raise SystemExit('benchmark: %d requests unanswered, %d nodes left '
                         'after %ss' % (figures['unanswered'],
                                        figures['nodes_left'], args.timeout))
    return {'latencies': figures['fulfil_seconds'],
            'all_fulfilled_s': figures['all_fulfilled_seconds'],
            'all_deleted_s': figures['returned_nodes_deleted_seconds']}


def zk_tls(args):
    """(cert, key, ca) of ``--zookeeper-tls``."""
    return tuple(os.path.join(args.zookeeper_tls, name)
                 for name in ('client.pem', 'client.key', 'ca.pem'))


def _answers(port):
    try:
        health(port)
        return True
    except OSError:
        return False


def print_table(result):
    width = max(len(k) for k in result)
    for key, value in result.items():
        print('%-*s  %s' % (width, key, value))


def print_comparison(results):
    keys = list(results[0])
    keys += [key for result in results[1:] for key in result
             if key not in keys]
    width = max(len(k) for k in keys)
    for key in keys:
        print('%-*s  %s' % (width, key, '  '.join(
            '%-16s' % (result.get(key, ''),) for result in results)))


def main(argv=None):
    args = parse_args(argv)
    if args.nodepool:
        from fleetflow.bench import nodepool_side
        results = [dict(run(args), system='fleetflow'),
                   nodepool_side.run(args)]
        print(json.dumps(results))
        print_comparison(results)
        return 0 if all(r['failed'] == 0 for r in results) else 1
    if args.compare and args.launchers > 1:
        one = argparse.Namespace(**dict(vars(args), launchers=1))
        results = [run(one), run(args)]
        print(json.dumps(results))
        print_comparison(results)
        return 0 if all(r['failed'] == 0 for r in results) else 1
    result = run(args)
    print(json.dumps(result))
    print_table(result)
    return 0 if result['failed'] == 0 else 1
