"""The soak's invariants, its request stream and its figures."""

import collections
import io
import os
import random
import subprocess
import sys
import time
from unittest import mock
import uuid

import fixtures
import testtools

from fleetflow.bench import launcher as bench
from fleetflow.bench import soak
from fleetflow.bench import zk_requester
from fleetflow.db import models
from fleetflow.drivers import base as driver_base
from fleetflow.execution import local
from fleetflow import node_states
from tests import base


def row(node, created, gone_at, external_id=None):
    return {'node_id': node, 'created': created, 'gone_at': gone_at,
            'external_id': external_id or 'fake-%s' % uuid.uuid4().hex[:6]}


class TestPureChecks(testtools.TestCase):

    def test_two_alive_finds_overlap(self):
        history = [row('a', 1, 3), row('a', 4, None), row('b', 1, 5),
                   row('b', 2, None)]
        node, rows = soak.two_alive(history)
        self.assertEqual('b', node)
        self.assertEqual([1, 2], [r['created'] for r in rows])

    def test_two_alive_an_undeleted_instance_overlaps_the_next(self):
        self.assertEqual('a', soak.two_alive(
            [row('a', 5, None), row('a', 1, None)])[0])

    def test_two_alive_none_in_turn(self):
        self.assertIsNone(soak.two_alive(
            [row('a', 1, 2), row('a', 2, 3), row('a', 3, None),
             row(None, 1, None), row(None, 2, None)]))

    def instance(self, node, external_id):
        return driver_base.Instance(
            external_id=external_id, state=driver_base.ACTIVE,
            metadata={driver_base.META_NODE_ID: node})

    def test_unowned(self):
        nodes = {
            'ready': {'external_id': 'i1', 'state': node_states.READY},
            'new': {'external_id': None, 'state': node_states.BUILDING},
            'retry': {'external_id': 'i2', 'state': node_states.BUILDING},
            'used': {'external_id': 'i4', 'state': node_states.IN_USE}}
        instances = [self.instance('ready', 'i1'),
                     self.instance('new', 'i5'),
                     self.instance('retry', 'i3'),
                     self.instance('used', 'i6'),
                     self.instance('gone', 'i7')]
        self.assertEqual(['i6', 'i7'], soak.unowned(instances, nodes))

    def test_instance_lost(self):
        nodes = [{'id': 'a', 'state': node_states.IN_USE, 'external_id': 'i1'},
                 {'id': 'b', 'state': node_states.READY, 'external_id': 'i2'},
                 {'id': 'c', 'state': node_states.READY, 'external_id': 'i3'},
                 {'id': 'd', 'state': node_states.BUILDING,
                  'external_id': 'i4'}]
        self.assertEqual(['a', 'c'], [n['id'] for n in soak.instance_lost(
            nodes, [self.instance('b', 'i2')])])

    def test_spare(self):
        self.assertTrue(soak.spare({'state': node_states.READY,
                                    'request_id': None}))
        self.assertFalse(soak.spare({'state': node_states.READY,
                                     'request_id': 'r1'}))
        self.assertFalse(soak.spare({'state': node_states.IN_USE,
                                     'request_id': None}))

    def test_overdue(self):
        now = 1000
        nodes = [{'id': 'a', 'state': node_states.BUILDING, 'state_time': 800},
                 {'id': 'b', 'state': node_states.BUILDING, 'state_time': 950},
                 {'id': 'c', 'state': node_states.DELETING, 'state_time': 900},
                 {'id': 'd', 'state': node_states.READY, 'state_time': 0}]
        limits = {node_states.BUILDING: 100, node_states.DELETING: 50}
        self.assertEqual(['a', 'c'], [n['id'] for n in soak.overdue(
            nodes, now, limits)])

    def test_postgresql_cluster_of_the_url_port(self):
        clusters = ('15 main 5432 online postgres /var/lib/15/main log\n'
                    '15 soak 5433 online postgres /var/lib/15/soak log\n')
        url = 'postgresql+psycopg2://u:p@127.0.0.1%s/db'
        self.assertEqual(('15', 'main'),
                         soak.postgresql_cluster(url % '', clusters))
        self.assertEqual(('15', 'soak'),
                         soak.postgresql_cluster(url % ':5433', clusters))
        self.assertRaises(SystemExit, soak.postgresql_cluster,
                          url % ':6000', clusters)

    def test_memory_growth_of_each_life_after_its_warm_up(self):
        samples = [dict(pid=1, peak_rss_mb=mb) for mb in (80, 90, 91, 95)]
        samples += [dict(pid=2, peak_rss_mb=mb) for mb in (80, 90)]
        self.assertEqual({1: 5}, soak.memory_growth(samples))


class TestDrain(testtools.TestCase):
    """The end check tells a backlog still served from a hang."""

    def drain(self):
        # 100 requests queued, served at 0.5 a second: 400 s, plus 60.
        return soak.Drain(start=0, backlog=100, throughput=0.5, grace=60,
                          stall=30)

    def test_bound_from_the_measured_throughput(self):
        self.assertEqual(460, self.drain().bound)
        self.assertEqual(60, soak.Drain(0, 5, 0, 60, 30).bound)

    def test_a_backlog_that_keeps_shrinking_may_go_on(self):
        drain = self.drain()
        for t in range(0, 451, 10):
            self.assertIsNone(drain.verdict(t, finished=t // 10))

    def test_nothing_finished_for_the_stall_window_fails(self):
        drain = self.drain()
        self.assertIsNone(drain.verdict(10, finished=7))
        self.assertIsNone(drain.verdict(40, finished=7))
        self.assertIn('nothing finished for 31 s',
                      drain.verdict(41, finished=7))

    def test_past_the_bound_fails_though_it_moves(self):
        drain = self.drain()
        for t in range(0, 461, 10):
            drain.verdict(t, finished=t)
        self.assertIn('bound 460 s', drain.verdict(461, finished=462))

    def test_the_end_check_raises_not_drained(self):
        # Nothing served during the run: the bound is the grace alone.
        soak_ = soak.Soak(soak.parse_args(
            ['--mode', 'single', '--drain-timeout', '-1']), None)
        soak_.requests = mock.Mock(outcomes=collections.Counter(),
                                   unsettled=lambda: [{'id': 'r1'}])
        soak_.loop = lambda until, inject: until({})
        soak_.check = mock.Mock()
        error = self.assertRaises(soak.Violation, soak_.run_drain)
        self.assertEqual('not-drained', error.evidence['kind'])
        self.assertIn('r1', error.evidence['message'])


class TestRequesterAnswer(testtools.TestCase):

    def test_a_requester_that_does_not_answer_is_killed(self):
        requester = zk_requester.Requester.__new__(zk_requester.Requester)
        requester.proc = subprocess.Popen(
            [sys.executable, '-c', 'import sys, time; sys.stdin.readline(); '
             'time.sleep(60)'], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        self.addCleanup(requester.close)
        e = self.assertRaises(zk_requester.RequesterError, requester.call,
                              'request_data', answer_within=0.5, id='1')
        self.assertIn('no answer in 0.5 s', str(e))
        self.assertIsNotNone(requester.proc.poll())


class TestLaunchers(testtools.TestCase):
    """Faults hit a launcher only once it has started."""

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        popen = self.useFixture(fixtures.MockPatchObject(
            soak.subprocess, 'Popen')).mock
        # A live process of this test's own: its CPU and threads are read.
        popen.return_value.poll.return_value = None
        popen.return_value.pid = os.getpid()
        self.launchers = soak.Launchers(self.tmp, {'soak-1': 'soak-1.conf'})

    def log(self, line):
        with open(self.launchers.log_path('soak-1'), 'a') as f:
            f.write('2026-11-30 11:48:01.598 30790 INFO %s\n' % line)

    def start(self, long_ago):
        self.launchers.start('soak-1')
        # However long ago: only its own line tells it started.
        self.launchers.started['soak-1'] = time.time() - long_ago

    def test_hit_only_once_it_logged_that_it_started(self):
        self.log('fleetflow.launcher [-] Launcher soak-1 started; 0 '
                 'unfinished flows resumed')
        self.start(long_ago=60)
        self.log('fleetflow.execution.local [-] [node 1] Resuming flow '
                 'delete-1 (SUSPENDED)')
        # The line of the process before it does not count.
        self.assertEqual([], self.launchers.up())
        self.log('fleetflow.launcher [-] Launcher soak-1 started; 1 '
                 'unfinished flows resumed')
        self.assertEqual(['soak-1'], self.launchers.up())
        self.launchers.frozen.add('soak-1')
        self.assertEqual([], self.launchers.up())

    def test_a_launcher_that_never_starts_is_named_with_its_figures(self):
        self.start(long_ago=300)
        self.log('fleetflow.execution.local [-] [node 1] Resuming flow '
                 'delete-1 (SUSPENDED)')
        late = self.launchers.not_started(soak.START_LIMIT)
        self.assertEqual(['soak-1'], list(late))
        self.assertEqual(os.getpid(), late['soak-1']['pid'])
        self.assertGreaterEqual(late['soak-1']['seconds'], 300)
        self.assertGreater(late['soak-1']['threads'], 0)
        self.log('fleetflow.launcher [-] Launcher soak-1 started; 1 '
                 'unfinished flows resumed')
        self.assertEqual({}, self.launchers.not_started(soak.START_LIMIT))

    def test_a_young_launcher_is_not_late(self):
        self.start(long_ago=5)
        self.assertEqual({}, self.launchers.not_started(soak.START_LIMIT))

    def test_a_killed_launcher_not_yet_reaped_is_not_sampled(self):
        # A zombie: its /proc files are there, its memory is not.
        # (Popen is this test's mock: the child is spawned, not reaped.)
        zombie = os.spawnv(os.P_NOWAIT, sys.executable,
                           [sys.executable, '-c', ''])
        self.addCleanup(os.waitpid, zombie, 0)
        for _ in range(600):
            with open('/proc/%d/stat' % zombie) as f:
                if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
                    break
            time.sleep(0.1)
        self.assertRaises(ProcessLookupError, bench.proc_stats, zombie)
        self.launchers.start('soak-1')
        self.launchers.procs['soak-1'] = mock.Mock(
            pid=zombie, **{'poll.return_value': None})
        self.launchers.sample(10)
        self.assertEqual([], self.launchers.samples['soak-1'])
        self.launchers.procs['soak-1'].pid = os.getpid()
        self.launchers.sample(20)
        self.assertEqual(20, self.launchers.samples['soak-1'][0]['t'])


class TestArgs(testtools.TestCase):

    def test_defaults_inject_every_cloud_fault(self):
        args = soak.parse_args(['--fault', 'rate-limit=0', '--seed', '7'])
        self.assertEqual(7, args.seed)
        self.assertEqual(0, args.fault['rate-limit'])
        self.assertEqual(0.05, args.fault['create-error'])
        self.assertEqual(1, args.launchers)
        self.assertEqual(['small', 'large'], args.labels)

    def test_unknown_fault_named(self):
        self.useFixture(fixtures.EnvironmentVariable(
            'FLEETFLOW_TEST_POSTGRES_URL'))
        self.useFixture(fixtures.MonkeyPatch(
            'fleetflow.bench.soak.TEST_POSTGRES_URL_FILE', '/nonexistent'))
        for argv, named in ((['--fault', 'bogus=1'], "'bogus'"),
                            (['--process-faults', 'nope'], 'nope'),
                            (['--mode', 'redis'], '--database')):
            stderr = self.useFixture(fixtures.MonkeyPatch(
                'sys.stderr', io.StringIO())).new_value
            e = self.assertRaises(SystemExit, soak.parse_args, argv)
            self.assertEqual(2, e.code)
            self.assertIn(named, stderr.getvalue())


class TestChecker(base.TestCase):
    """The checker on a real node store, logbooks and fake cloud."""

    def setUp(self):
        super().setUp()
        self.ff = self.useFixture(base.FleetflowFixture(start=False,
                                                        runner=False))
        args = soak.parse_args(['--seed', '1', '--hold', '0', '0'])
        self.requests = soak.Requests(self.ff.store, random.Random(1), args)
        self.checker = soak.Checker(
            self.ff.ctx, self.ff.driver,
            {node_states.BUILDING: 60, node_states.DELETING: 60}, leak_grace=5,
            max_logbook_rows=30)

    def check(self, now=None):
        now = now or time.time()
        self.requests.refresh(now)
        nodes = {n['id']: n for n in self.ff.store.list_nodes()}
        self.checker.check(self.requests, nodes, now)

    def launch(self, node):
        return self.ff.driver.create_instance(
            node['id'], {'name': 'main'}, {'name': 'small'},
            {driver_base.META_NODE_ID: node['id'],
             driver_base.META_PROVIDER: self.ff.driver.name})

    def test_healthy_fleet_passes_and_checks_count(self):
        node = self.ff.create_node()
        instance = self.launch(node)
        self.ff.store.update_node(node['id'],
                                  external_id=instance.external_id)
        self.check()
        self.assertGreater(self.checker.checks, 0)

    def test_leak_after_grace(self):
        node = self.ff.create_node()
        instance = self.launch(node)
        self.ff.store.delete_node(node['id'])
        now = time.time()
        self.check(now)
        e = self.assertRaises(soak.Violation, self.check, now + 6)
        self.assertEqual('leak', e.evidence['kind'])
        self.assertEqual(instance.external_id, e.evidence['instance'])
        self.assertEqual(node['id'], e.evidence['node'])

    def test_two_instances_alive(self):
        node = self.ff.create_node()
        self.launch(node)
        self.launch(node)
        e = self.assertRaises(soak.Violation, self.check)
        self.assertEqual('two-instances', e.evidence['kind'])
        self.assertEqual(2, len(e.evidence['instances']))

    def test_instance_of_an_in_use_node_deleted(self):
        node = self.ff.create_node()
        instance = self.launch(node)
        self.ff.force_state(node['id'], node_states.IN_USE,
                            external_id=instance.external_id)
        self.check()
        self.ff.driver.delete_instance(instance.external_id)
        e = self.assertRaises(soak.Violation, self.check)
        self.assertEqual('instance-lost', e.evidence['kind'])
        self.assertEqual(instance.external_id, e.evidence['instance'])

    def test_stuck_node(self):
        self.ff.create_node()
        e = self.assertRaises(soak.Violation, self.check, time.time() + 61)
        self.assertEqual('stuck', e.evidence['kind'])

    def fulfil(self, request_id, node):
        self.ff.force_state(node['id'], node_states.READY,
                            request_id=request_id)
        self.ff.store.set_request_state(request_id, models.PENDING)
        self.assertTrue(self.ff.store.fulfil_request(request_id,
                                                     [node['id']]))

    def track(self):
        """A new request that the soak watches."""
        request = self.ff.store.create_request([base.LABEL])
        self.requests.mine[request['id']] = request
        return request['id']

    def test_node_handed_to_two_requests(self):
        first = self.track()
        node = self.ff.create_node()
        self.ff.store.update_node(
            node['id'], external_id=self.launch(node).external_id)
        self.fulfil(first, node)
        self.check()
        # The node goes to a second request, its first one still held.
        second = self.track()
        self.ff.store.update_node(node['id'], request_id=None)
        self.ff.store.set_request_state(first, models.FULFILLED)
        self.fulfil(second, node)
        e = self.assertRaises(soak.Violation, self.check)
        self.assertEqual('handed-twice', e.evidence['kind'])
        self.assertEqual(node['id'], e.evidence['node'])

    def test_failed_request_needs_a_reason(self):
        request_id = self.track()
        self.ff.store.set_request_state(request_id, models.REQUEST_FAILED)
        e = self.assertRaises(soak.Violation, self.check)
        self.assertEqual('failed-without-reason', e.evidence['kind'])

    def test_request_gone_unreleased_is_lost(self):
        request_id = self.track()
        self.ff.store.release_request(request_id)
        e = self.assertRaises(soak.Violation, self.check)
        self.assertEqual('request-lost', e.evidence['kind'])

    def test_released_after_hold(self):
        request_id = self.track()
        self.ff.store.set_request_state(request_id, models.REQUEST_FAILED,
                                        reason='no')
        self.check()
        self.requests.release_due(time.time())
        self.assertEqual({}, self.requests.mine)
        self.assertEqual([], self.ff.store.list_requests())
        self.check()

    def test_logbook_rows_bounded(self):
        node = self.ff.create_node(state=node_states.USED)
        flows = local.LocalRunner(self.ff.ctx, workers=1)
        self.addCleanup(flows.stop)
        for _ in range(5):
            flows.record_flow(node['id'], 'delete',
                              dict(node_id=node['id'],
                                   provider=node['provider'],
                                   delete_timeout=30))
        e = self.assertRaises(soak.Violation, self.check)
        self.assertEqual('logbook-rows', e.evidence['kind'])
        evidence = self.checker.evidence(
            e, soak.Launchers(self.ff.state_path, {}))
        self.assertEqual(node['id'], evidence['node_row']['id'])
        self.assertEqual(5, len(evidence['flows']))


class FakeZuul:
    """Zuul's side as the requester child answers it, from a script."""

    def __init__(self):
        self.requests = {}
        self.calls = []
        self.killed = False
        #: its ZooKeeper session (a new one once it expired)
        self.session = 1
        self.made = 0
        #: the calls that fail as if ZooKeeper did not answer
        self.unreachable = set()
        #: the child process: alive
        self.proc = mock.Mock(**{'poll.return_value': None})

    def call(self, op, answer_within=None, **args):
        self.calls.append((op, args))
        if op == 'request':
            self.made += 1
            request_id = '%03d' % self.made
            self.requests[request_id] = {'state': 'requested',
                                         'nodes': [], 'declined_by': []}
            return request_id
        if op == 'request_data':
            return self.requests.get(args['id'])
        if op in self.unreachable:
            raise zk_requester.RequesterError('%s: not connected' % op)
        if op == 'session':
            return self.session
        if op == 'accept':
            data = self.requests.pop(args['id'])
            return [{'id': node_id, 'type': [label], 'state': 'ready',
                     'allocated_to': owner}
                    for node_id, label, owner in data['nodes']]
        return None

    def kill(self):
        self.killed = True

    def close(self):
        pass


class TestZuulRequests(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.zuuls = []
        args = soak.parse_args(['--seed', '1', '--labels', 'small',
                                '--max-size', '1', '--hold', '0', '0',
                                '--rate', '1000'])
        self.requests = soak.ZuulRequests(self.new_zuul, random.Random(1),
                                          args)
        self.checker = soak.Checker(None, None, {}, 0, 0)

    def new_zuul(self):
        self.zuuls.append(FakeZuul())
        return self.zuuls[-1]

    def submit(self, count):
        zuul = self.zuuls[-1]
        while len(zuul.requests) < count:
            self.requests.submit_due(time.time())
        return sorted(zuul.requests)

    def test_fulfilled_accepted_checked_and_given_back(self):
        first, second = self.submit(2)[:2]
        zuul = self.zuuls[-1]
        zuul.requests[first].update(state='fulfilled',
                                    nodes=[('n1', 'small', first)])
        zuul.requests[second].update(state='failed', declined_by=['p-1'])
        self.requests.refresh(time.time())
        self.checker._requests(self.requests, {})
        self.assertEqual({'n1': first}, self.checker.handed)
        self.requests.release_due(time.time())
        self.assertIn(('give_back', {'nodes': ['n1']}), zuul.calls)
        self.assertEqual(2, self.requests.outcomes['released'])

    def test_node_of_another_request_is_a_violation(self):
        request_id = self.submit(1)[0]
        self.zuuls[-1].requests[request_id].update(
            state='fulfilled', nodes=[('n1', 'small', 'someone-else')])
        self.requests.refresh(time.time())
        e = self.assertRaises(soak.Violation, self.checker._requests,
                              self.requests, {})
        self.assertEqual('fulfilled-wrong', e.evidence['kind'])

    def test_vanished_request_is_lost_while_its_session_lives(self):
        gone, kept = self.submit(2)[:2]
        zuul = self.zuuls[-1]
        del zuul.requests[gone]
        self.requests.refresh(time.time())
        self.assertEqual([gone], self.requests.lost)
        self.assertIn(kept, self.requests.mine)

    def test_requests_of_an_expired_session_are_abandoned(self):
        # ZooKeeper was down past the session's timeout: the session's
        # ephemeral requests and node locks went with it.
        old, held = self.submit(2)[:2]
        zuul = self.zuuls[-1]
        zuul.requests[held].update(state='fulfilled',
                                   nodes=[('n1', 'small', held)])
        self.requests.refresh(time.time())
        zuul.session = 2
        del zuul.requests[old]
        new = self.submit(1)[0]
        self.requests.refresh(time.time())
        self.assertEqual([], self.requests.lost)
        self.assertEqual(1, self.requests.outcomes['abandoned'])
        self.assertIn(new, self.requests.mine)
        # The locks of the expired session are not the requester's.
        self.requests.release_due(time.time())
        self.assertNotIn('give_back', [op for op, _ in zuul.calls])
        # A request of the new session may not vanish.
        del zuul.requests[new]
        self.requests.refresh(time.time())
        self.assertEqual([new], self.requests.lost)

    def test_release_while_zookeeper_is_unreachable_is_made_again(self):
        request_id = self.submit(1)[0]
        zuul = self.zuuls[-1]
        zuul.requests[request_id].update(
            state='fulfilled', nodes=[('n1', 'small', request_id),
                                      ('n2', 'small', request_id)])
        self.requests.refresh(time.time())
        zuul.unreachable = {'session'}
        self.assertRaises(zk_requester.RequesterError,
                          self.requests.release_due, time.time())
        zuul.unreachable = {'give_back'}
        self.assertRaises(zk_requester.RequesterError,
                          self.requests.release_due, time.time())
        zuul.unreachable = set()
        self.requests.release_due(time.time())
        # n1's failed, then n1's again and n2's.
        self.assertEqual([{'nodes': ['n1']}, {'nodes': ['n1']},
                          {'nodes': ['n2']}],
                         [args for op, args in zuul.calls
                          if op == 'give_back'])
        self.assertEqual(1, self.requests.outcomes['released'])
        self.assertEqual({}, self.requests.held)

    def test_session_loss_abandons_requests_and_starts_a_requester(self):
        self.submit(3)
        first = self.zuuls[-1]
        self.requests.lose_session()
        self.assertTrue(first.killed)
        self.assertEqual('drop', first.calls[-1][0])
        self.assertEqual(2, len(self.zuuls))
        self.assertEqual({}, self.requests.mine)
        self.assertEqual(len(first.requests),
                         self.requests.outcomes['abandoned'])

    def test_nothing_asked_while_zookeeper_is_down(self):
        self.requests.paused = True
        self.requests.submit_due(time.time() + 10)
        self.requests.refresh(time.time())
        self.assertEqual([], self.zuuls[-1].calls)
