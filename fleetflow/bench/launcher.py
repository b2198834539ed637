"""Benchmark the real launcher process against the fake cloud.

Starts ``fleetflow-launcher`` on a fresh state directory (fake driver,
SQLite), submits N one-node requests at once through the Python client
API, releases every node once all requests are fulfilled, and reports:
request-to-fulfilled median and p95 (from the timestamps the launcher
recorded), the time until every released node was deleted, the launcher's
CPU seconds and peak RSS (from /proc), its peak thread count, the cloud
API calls made (counted by the fake cloud) and the database transactions
per node.
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

from oslo_config import cfg
import yaml

from fleetflow import client as ff_client
from fleetflow import conf as ff_conf
from fleetflow.db import api as db_api
from fleetflow.db import migration
from fleetflow.drivers import fake

CLK_TCK = os.sysconf('SC_CLK_TCK')


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='fleetflow-bench launcher', description=__doc__.split('\n')[0])
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
    parser.add_argument('--refresh-interval', type=float, default=0.1,
                        help='seconds between instance listings')
    parser.add_argument('--workers', type=int, default=16)
    parser.add_argument('--launchers', type=int, default=1,
                        help='launcher processes (more than one needs '
                             'the jobboard)')
    parser.add_argument('--timeout', type=float, default=600)
    parser.add_argument('--keep', action='store_true',
                        help='keep the state directory')
    return parser.parse_args(argv)


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def proc_stats(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    status = {}
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            key, _, value = line.partition(':')
            status[key] = value.strip()
    return {'cpu': cpu, 'peak_rss_mb': int(status['VmHWM'].split()[0]) / 1024,
            'threads': int(status['Threads'])}


def write_config(tmp, args, port):
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
    with open(os.path.join(tmp, 'layout.yaml'), 'w') as f:
        yaml.safe_dump({'labels': [{'name': 'small'}],
                        'providers': [provider]}, f)
    with open(os.path.join(tmp, 'fleetflow.conf'), 'w') as f:
        f.write('[DEFAULT]\nstate_path = %s\n'
                '[launcher]\nlayout_file = %s\nworkers = %d\n'
                'instance_refresh_interval = %s\n'
                '[persistence]\nbackend = %s\n'
                '[status_api]\nenabled = true\nbind_port = %d\n'
                % (tmp, os.path.join(tmp, 'layout.yaml'), args.workers,
                   args.refresh_interval, args.persistence, port))
    return provider


def health(port):
    with urllib.request.urlopen('http://127.0.0.1:%d/health' % port,
                                timeout=5) as response:
        return json.load(response)


def run(args):
    tmp = tempfile.mkdtemp(prefix='fleetflow-bench-')
    port = free_port()
    provider = write_config(tmp, args, port)
    conf = cfg.ConfigOpts()
    config_file = os.path.join(tmp, 'fleetflow.conf')
    ff_conf.setup(conf, ['--config-file', config_file])
    migration.upgrade(db_api.create_engine(ff_conf.database_url(conf)))
    cloud = fake.FakeDriver(provider, conf)
    log = open(os.path.join(tmp, 'launcher.log'), 'w')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'fleetflow.cmd.launcher', '--config-file',
         os.path.join(tmp, 'fleetflow.conf')], stdout=log, stderr=log)
    try:
        return measure(args, conf, cloud, proc, port)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
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


def measure(args, conf, cloud, proc, port):
    wait(lambda: _answers(port), 60, 'the launcher to start')
    start = proc_stats(proc.pid)
    transactions0 = health(port)['db_transactions']
    peak = {'threads': start['threads']}

    def sample():
        peak['threads'] = max(peak['threads'],
                              proc_stats(proc.pid)['threads'])

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
    latencies = sorted(r['state_time'] - r['created_at'] for r in fulfilled)
    all_fulfilled = time.time() - submitted
    released = time.time()
    for request_id in ids:
        client.release_request(request_id)
    wait(lambda: not client.list_nodes(), args.timeout,
         'released nodes to be deleted', sample)
    deleted = time.time() - released
    end = proc_stats(proc.pid)
    transactions = health(port)['db_transactions'] - transactions0
    client.close()
    calls = cloud.call_counts()
    return {
        'nodes': args.nodes,
        'create_latency': args.create_latency,
        'persistence': args.persistence,
        'keyscan': args.keyscan,
        'fulfilled': len(fulfilled),
        'failed': args.nodes - len(fulfilled),
        'median_fulfilled_s': round(statistics.median(latencies), 3)
        if latencies else None,
        'p95_fulfilled_s': round(latencies[int(0.95 * (len(latencies) - 1))],
                                 3) if latencies else None,
        'all_fulfilled_s': round(all_fulfilled, 3),
        'all_deleted_s': round(deleted, 3),
        'launches_per_s': round(len(fulfilled) / all_fulfilled, 1),
        'launcher_cpu_s': round(end['cpu'] - start['cpu'], 3),
        'peak_rss_mb': round(end['peak_rss_mb'], 1),
        'peak_threads': peak['threads'],
        'cloud_calls': calls,
        'db_transactions_per_node': round(transactions / args.nodes, 1),
    }


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


def main(argv=None):
    args = parse_args(argv)
    result = run(args)
    print(json.dumps(result))
    print_table(result)
    return 0 if result['failed'] == 0 else 1
