"""Several ``fleetflow-launcher`` processes on one fleet.

Each test starts two or three real launcher processes (``python -m
fleetflow.cmd.launcher``) on one PostgreSQL database (a schema of the
test's own), one jobboard (a namespace of the test's own) and one fake
cloud (a SQLite file they all share), once with Redis and once with
ZooKeeper, and checks what several hosts must guarantee:

- requests spread over the launchers are each served once, by nodes that
  no other request got;
- a launcher SIGKILLed in the middle of its launches loses its claims,
  and another one finishes its flows within the claim expiry, with one
  instance per node (none launched twice, none leaked);
- launchers that see the same min-ready gap together do not overshoot it.

The fake cloud keeps every instance it ever had, so "one instance per
node, ever" is checked from the cloud's side.

The servers: ``tools/test-servers`` starts them (PostgreSQL, Redis on
127.0.0.1:6379, ZooKeeper on 127.0.0.1:2181); ``FLEETFLOW_TEST_REDIS``
and ``FLEETFLOW_TEST_ZOOKEEPER`` (host:port) point elsewhere. A missing
server skips the tests, and fails them in CI (``CI=true``).
"""

import collections
import os
import signal
import subprocess
import sys
import time

import fixtures
from testtools import content
import yaml

from fleetflow.db import api
from fleetflow.db import migration
from fleetflow.db import models
from fleetflow.drivers import fake
from fleetflow import node_states
from tests import base
from tests import board_servers
from tests import db_urls

PROVIDER = 'fake-1'
LABEL = 'small'


class Fleet(fixtures.Fixture):
    """Launcher processes on one database, jobboard and fake cloud.

    :param claim_expiry: ``[jobboard] claim_expiry`` (ZooKeeper's own
        minimum session timeout is 4 s with its default tick).
    :param workers: ``[jobboard] conductor_workers`` of each process.
    """

    def __init__(self, testcase, backend, create_latency=0.5, min_ready=0,
                 max_servers=100, claim_expiry=3, workers=8):
        super().__init__()
        self.testcase = testcase
        self.backend = backend
        self.create_latency = create_latency
        self.min_ready = min_ready
        self.max_servers = max_servers
        self.claim_expiry = claim_expiry
        self.workers = workers
        self.procs = {}
        self.logs = {}

    def _setUp(self):
        self.address = board_servers.address(self.testcase, self.backend)
        self.db_url = db_urls.postgres_url(self.testcase)
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.namespace = board_servers.namespace(self.testcase, self.backend,
                                                 self.address)
        self.engine = api.create_engine(self.db_url)
        self.addCleanup(self.engine.dispose)
        migration.upgrade(self.engine)
        self.store = api.Store(self.engine)
        self.provider = {
            'name': PROVIDER, 'driver': 'fake',
            'state-path': os.path.join(self.dir, 'cloud.sqlite'),
            'create-latency': self.create_latency, 'delete-latency': 0,
            'launch-retries': 3, 'launch-timeout': 60, 'boot-timeout': 10,
            'pools': [{'name': 'main', 'max-servers': self.max_servers,
                       'host-key-checking': False,
                       'labels': [{'name': LABEL}]}]}
        self.layout_file = os.path.join(self.dir, 'layout.yaml')
        with open(self.layout_file, 'w') as f:
            yaml.safe_dump({'labels': [{'name': LABEL,
                                        'min-ready': self.min_ready}],
                            'providers': [self.provider]}, f)
        self.cloud = fake.FakeDriver(self.provider,
                                     base.make_conf(self.dir))
        self.addCleanup(self._attach_logs)
        self.addCleanup(self.stop_all)

    def _attach_logs(self):
        for name, path in sorted(self.logs.items()):
            with open(path) as f:
                self.testcase.addDetail('log-%s' % name,
                                        content.text_content(f.read()))

    def config(self, name, role):
        state = os.path.join(self.dir, name)
        os.makedirs(state, exist_ok=True)
        path = os.path.join(self.dir, '%s.conf' % name)
        with open(path, 'w') as f:
            f.write('\n'.join([
                '[DEFAULT]', 'host = %s' % name, 'state_path = %s' % state,
                '[database]', 'connection = %s' % self.db_url,
                '[launcher]', 'layout_file = %s' % self.layout_file,
                'role = %s' % role, 'request_interval = 0.5',
                'instance_refresh_interval = 0.1', 'poll_attempt = 0.5',
                'cleanup_interval = 2', 'delete_timeout = 30',
                '[jobboard]', 'enabled = true',
                'backend = %s' % self.backend,
                'hosts = %s' % self.address,
                'namespace = %s' % self.namespace,
                'claim_expiry = %d' % self.claim_expiry,
                'conductor_workers = %d' % self.workers, '']))
        return path

    def start(self, name, role='both'):
        log = os.path.join(self.dir, '%s.log' % name)
        self.logs[name] = log
        with open(log, 'a') as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, '-m', 'fleetflow.cmd.launcher',
                 '--config-file', self.config(name, role)],
                stdout=out, stderr=subprocess.STDOUT)
        return self.procs[name]

    def started(self, name):
        """Whether the process logged that it runs."""
        with open(self.logs[name]) as f:
            return 'runs as' in f.read()

    def wait_started(self, *names, timeout=30):
        base.FleetflowFixture.wait_for(
            lambda: all(self.started(n) for n in names), timeout,
            interval=0.1, message='launchers %s not started' % (names,))

    def kill(self, name, signum=signal.SIGKILL):
        proc = self.procs[name]
        proc.send_signal(signum)
        proc.wait(30)

    def stop_all(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def alive(self):
        for name, proc in self.procs.items():
            if proc.poll() is not None and proc.returncode != -9:
                raise AssertionError('launcher %s exited with %s'
                                     % (name, proc.returncode))

    # What the fleet looks like

    def requests(self, ids=None):
        rows = {r['id']: r for r in self.store.list_requests()}
        return rows if ids is None else {i: rows[i] for i in ids}

    def nodes(self):
        return self.store.list_nodes()

    def instances_per_node(self):
        """How many instances the cloud ever made for each node."""
        return collections.Counter(i['node_id']
                                   for i in self.cloud.instance_history())

    def live_instances(self):
        return self.cloud.list_instances()

    def wait_for(self, predicate, timeout, message):
        def check():
            self.alive()
            return predicate()
        return base.FleetflowFixture.wait_for(check, timeout, 0.1,
                                              message)


class MultiLauncherTests:
    """Run on the backend the subclass names."""

    backend = None
    claim_expiry = 3
    TIMEOUT = 90

    def fleet(self, **kwargs):
        kwargs.setdefault('claim_expiry', self.claim_expiry)
        return self.useFixture(Fleet(self, self.backend, **kwargs))

    def fulfilled(self, fleet, ids):
        requests = fleet.requests(ids)
        return all(r['state'] == models.FULFILLED
                   for r in requests.values())

    def assert_served_once(self, fleet, ids, labels=1):
        """Every request has its own nodes, in use, each of one instance."""
        nodes = fleet.nodes()
        by_request = collections.defaultdict(list)
        for node in nodes:
            if node['request_id']:
                by_request[node['request_id']].append(node)
        for request_id in ids:
            self.assertEqual(labels, len(by_request[request_id]),
                             'request %s' % request_id)
            for node in by_request[request_id]:
                self.assertEqual(node_states.IN_USE, node['state'])
        served = [n['id'] for i in ids for n in by_request[i]]
        self.assertEqual(len(served), len(set(served)))
        made = fleet.instances_per_node()
        for node_id in served:
            self.assertEqual(1, made[node_id], 'instances of node %s'
                             % node_id)

    def release_and_check_clean(self, fleet, ids, timeout=30):
        """Release the requests; every node and instance goes, none leaks."""
        for request_id in ids:
            fleet.store.release_request(request_id)
        fleet.wait_for(lambda: not fleet.nodes(), timeout,
                       'released nodes not deleted')
        fleet.wait_for(lambda: not fleet.live_instances(), timeout,
                       'instances left behind')
        made = fleet.instances_per_node()
        self.assertEqual([], [n for n, count in made.items() if count != 1])

    def test_requests_spread_over_launchers(self):
        # One launcher that only serves requests, one that only runs
        # flows, one that does both; two workers each, so that both
        # conductors must take a share.
        fleet = self.fleet(create_latency=1, workers=2)
        fleet.start('launcher-1', role='launcher')
        fleet.start('launcher-2', role='conductor')
        fleet.start('launcher-3', role='both')
        fleet.wait_started('launcher-1', 'launcher-2', 'launcher-3')
        ids = []
        for _ in range(4):
            ids += [fleet.store.create_request([LABEL])['id']
                    for _ in range(3)]
            time.sleep(0.3)
        fleet.wait_for(lambda: self.fulfilled(fleet, ids), 40,
                       'requests not fulfilled')
        self.assert_served_once(fleet, ids)
        runners = collections.Counter(n['launcher'] for n in fleet.nodes())
        self.addDetail('flows-run-by', content.text_content(str(runners)))
        self.assertEqual({'launcher-2', 'launcher-3'}, set(runners))
        self.release_and_check_clean(fleet, ids)

    def test_killed_launcher_flows_finish_elsewhere(self):
        fleet = self.fleet(create_latency=4, workers=3)
        hosts = ('launcher-1', 'launcher-2')
        for name in hosts:
            fleet.start(name)
        fleet.wait_started(*hosts)
        ids = [fleet.store.create_request([LABEL])['id'] for _ in range(6)]
        made = fleet.instances_per_node

        def launching():
            """Nodes whose instance is being made, by conductor host."""
            by_host = collections.defaultdict(list)
            for node in fleet.nodes():
                if node['state'] == node_states.BUILDING and \
                        made()[node['id']]:
                    by_host[node['launcher']].append(node)
            return by_host

        # Kill the host that served the requests, once its conductor is
        # in the middle of launches (three workers a host: both are).
        def victim():
            served = collections.Counter(
                r['launcher'] for r in fleet.requests(ids).values())
            by_host = launching()
            for host, _count in served.most_common():
                if host in hosts and by_host.get(host):
                    return host, by_host[host]

        dead, victims = fleet.wait_for(victim, 20, 'nothing launching')
        orphans = [r['id'] for r in fleet.requests(ids).values()
                   if r['state'] == models.PENDING and r['launcher'] == dead]
        fleet.kill(dead)
        killed = time.time()
        # Its claims expire; the other host resumes its flows (their
        # instances are being made) and settles the requests it served.
        fleet.wait_for(lambda: self.fulfilled(fleet, ids),
                       fleet.claim_expiry + fleet.create_latency + 8,
                       'requests not fulfilled after the kill')
        took = time.time() - killed
        self.addDetail('fulfilled-after-kill', content.text_content(
            '%s killed; all fulfilled %.1fs later; %d flows taken over, %d '
            'requests adopted' % (dead, took, len(victims), len(orphans))))
        self.assert_served_once(fleet, ids)
        for node in victims:
            self.assertEqual(node_states.IN_USE,
                             fleet.store.get_node(node['id'])['state'])
        for request_id in orphans:
            self.assertGreater(fleet.requests()[request_id]['state_time'],
                               killed)
        self.release_and_check_clean(fleet, ids)

    def test_min_ready_not_overshot(self):
        fleet = self.fleet(create_latency=1, min_ready=4)
        for name in ('launcher-1', 'launcher-2', 'launcher-3'):
            fleet.start(name)
        most = [0]

        def spares():
            count = sum(1 for n in fleet.nodes()
                        if n['request_id'] is None
                        and n['state'] in node_states.SPARE)
            most[0] = max(most[0], count)
            return count

        def ready_spares():
            spares()
            return sum(1 for n in fleet.nodes()
                       if n['request_id'] is None
                       and n['state'] == node_states.READY) == 4

        fleet.wait_for(ready_spares, 30, 'min-ready not reached')
        # Every launcher passes a few times over the same full pool.
        deadline = time.time() + 3
        while time.time() < deadline:
            spares()
            time.sleep(0.05)
        self.assertEqual(4, most[0])
        self.assertEqual(4, sum(fleet.instances_per_node().values()))
        # Two requests take two spares; the gap is filled once.
        ids = [fleet.store.create_request([LABEL])['id'] for _ in range(2)]
        fleet.wait_for(lambda: self.fulfilled(fleet, ids), 20,
                       'requests not fulfilled')
        fleet.wait_for(ready_spares, 20, 'min-ready not refilled')
        deadline = time.time() + 3
        while time.time() < deadline:
            spares()
            time.sleep(0.05)
        self.assertEqual(4, most[0])
        self.assertEqual(6, sum(fleet.instances_per_node().values()))
        self.assert_served_once(fleet, ids)


class TestRedis(MultiLauncherTests, base.TestCase):
    backend = 'redis'


class TestZooKeeper(MultiLauncherTests, base.TestCase):
    backend = 'zookeeper'
    # ZooKeeper's shortest session with its default tick (2 s).
    claim_expiry = 4
