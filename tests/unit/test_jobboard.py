"""The jobboard mode: board options, the pass lock, posting and conducting.

Tests of the board options and of the lock on SQLite need no server. The
rest run against PostgreSQL, Redis and ZooKeeper (``tools/test-servers``)
and are skipped without them, failed in CI (``CI=true``).
"""

import collections
import contextlib
import datetime
import os
import subprocess
import sys
import threading
import time
from unittest import mock
import uuid

import fixtures
from taskflow import exceptions as tf_exceptions
from taskflow.jobs.backends import impl_redis
from taskflow.persistence import models as tf_models
from taskflow import states

from fleetflow import context
from fleetflow.db import api
from fleetflow.db import locks
from fleetflow.db import migration
from fleetflow.db import models
from fleetflow import exceptions
from fleetflow.execution import board as ff_board
from fleetflow.execution import conductor as ff_conductor
from fleetflow.execution import posting
from fleetflow.execution import service as ff_service
from fleetflow import flowinfo
from fleetflow import instance_cache
from fleetflow import launcher as ff_launcher
from fleetflow import node_states
from tests import base
from tests import board_servers
from tests import db_urls
from tests.unit import test_registry


def forget_overrides(testcase, conf, keys):
    """Clear the overrides ``keys`` of ``conf`` when the test ends.

    oslo.config keeps an override in the option group, and every
    ConfigOpts that registered fleetflow's group objects shares it: an
    override left behind would change the next test's configuration.
    """
    def clear():
        for group, name in keys:
            conf.clear_override(name, group)
    testcase.addCleanup(clear)


def jobboard_overrides(testcase, **options):
    """``conf_overrides`` of ``[jobboard]`` options, cleared at the end."""
    overrides = {('jobboard', name): value
                 for name, value in options.items()}
    forget_overrides(testcase, base.make_conf('/tmp/unused'), overrides)
    return overrides


class TestBoardConfig(base.TestCase):

    def jobboard_conf(self, **options):
        return base.make_conf('/tmp/unused', overrides=jobboard_overrides(
            self, **options))

    def test_redis(self):
        backend, options = ff_board.board_config(self.jobboard_conf(
            hosts=['redis.example.org:6380'], namespace='fleet-a',
            claim_expiry=20))
        self.assertEqual('redis', backend)
        self.assertEqual({'host': 'redis.example.org', 'port': 6380,
                          'namespace': 'fleet-a', 'socket_timeout': 10.0,
                          'socket_connect_timeout': 5.0}, options)

    def test_redis_default_port_tls_and_credentials(self):
        _, options = ff_board.board_config(self.jobboard_conf(
            hosts=['10.0.0.5'], username='fleet', password='s3cret',
            tls=True, tls_ca_file='/etc/ssl/ca.pem', claim_expiry=4))
        self.assertEqual(6379, options['port'])
        self.assertEqual(4.0, options['socket_timeout'])
        self.assertEqual(('fleet', 's3cret', True, '/etc/ssl/ca.pem'),
                         (options['username'], options['password'],
                          options['ssl'], options['ssl_ca_certs']))
        # redis-py checks the server certificate's hostname.
        self.assertEqual((True, 'required'), (options['ssl_check_hostname'],
                                              options['ssl_cert_reqs']))
        board = ff_board.Board(self.jobboard_conf(
            hosts=['10.0.0.5'], tls=True, tls_ca_file='/etc/ssl/ca.pem'))
        self.assertTrue(board._client.connection_pool.connection_kwargs[
            'ssl_check_hostname'])

    def test_zookeeper_tls_needs_its_ca(self):
        e = self.assertRaises(exceptions.ConfigError, ff_board.board_config,
                              self.jobboard_conf(backend='zookeeper',
                                                 tls=True))
        self.assertIn('[jobboard] tls_ca_file: required', str(e))

    def test_redis_takes_one_host(self):
        e = self.assertRaises(exceptions.ConfigError, ff_board.board_config,
                              self.jobboard_conf(hosts=['a', 'b']))
        self.assertIn('Redis takes one host', str(e))

    def test_zookeeper(self):
        backend, options = ff_board.board_config(self.jobboard_conf(
            backend='zookeeper', hosts=['zk1', 'zk2:2182', '[::1]'],
            namespace='fleet-a', claim_expiry=12))
        self.assertEqual('zookeeper', backend)
        self.assertEqual({'hosts': 'zk1:2181,zk2:2182,[::1]:2181',
                          'path': '/fleetflow/fleet-a/jobs',
                          'timeout': 12.0, 'check_compatible': False},
                         options)

    def test_bad_namespaces(self):
        for backend, namespace in (('redis', 'a b'), ('redis', ''),
                                   ('zookeeper', 'a/b'),
                                   ('zookeeper', 'myjobs')):
            self.assertRaises(exceptions.ConfigError, ff_board.board_config,
                              self.jobboard_conf(backend=backend,
                                                 namespace=namespace))

    def test_zookeeper_client_session_is_the_claim_expiry(self):
        conf = self.jobboard_conf(backend='zookeeper', hosts=['zk1'],
                                  claim_expiry=7, username='u',
                                  password='p')
        board = ff_board.Board(conf)
        self.assertEqual(7000, board._client._session_timeout)
        self.assertEqual({('digest', 'u:p')}, board._client.auth_data)

    def test_service_per_role(self):
        ff = self.useFixture(base.FleetflowFixture(runner=False,
                                                   start=False))
        forget_overrides(self, ff.conf, [('launcher', 'role'),
                                         ('jobboard', 'enabled')])
        ff.conf.set_override('role', 'conductor', 'launcher')
        self.assertRaises(exceptions.ConfigError, ff_service.make_service,
                          ff.ctx)
        ff.conf.set_override('role', 'both', 'launcher')
        launcher = ff_service.make_service(ff.ctx)
        self.addCleanup(launcher.runner.stop)
        self.assertIs(ff_launcher.Launcher, type(launcher))
        ff.conf.set_override('enabled', True, 'jobboard')
        for role, parts in (('launcher', (True, False)),
                            ('conductor', (False, True)),
                            ('both', (True, True))):
            ff.conf.set_override('role', role, 'launcher')
            service = ff_service.make_service(ff.ctx)
            if service.launcher is not None:
                self.addCleanup(service.launcher.runner.stop)
            self.assertEqual(parts, (service.launcher is not None,
                                     service.conductor is not None))
            self.assertEqual(0, service.passes)
            self.assertEqual(0, service.runner.running())


LOCK_CHILD = '''
import sys, time
from fleetflow.db import api, locks
lock = locks.PassLock(api.create_engine(sys.argv[1]))
with lock.hold():
    print('held', flush=True)
    time.sleep(float(sys.argv[2]))
'''


class TestBoardJobs(base.TestCase):

    def test_jobs_that_left_the_board_sort_last(self):
        """A job consumed while the board is listed has no creation time."""
        board = ff_board.Board(base.make_conf(
            '/tmp/unused', overrides=jobboard_overrides(self)))
        times = [datetime.datetime(2026, 1, 1, 0, minute)
                 for minute in (2, 1)]
        jobs = [mock.Mock(created_on=created)
                for created in (times[0], None, times[1], None)]
        with mock.patch.object(board.jobboard, 'iterjobs',
                               return_value=jobs):
            listed = board.jobs()
        self.assertEqual([times[1], times[0], None, None],
                         [job.created_on for job in listed])


class PassLockTests:
    """Run against the engine ``make_url`` gives."""

    def setUp(self):
        super().setUp()
        self.url = self.make_url()
        self.engine = api.create_engine(self.url)
        self.addCleanup(self.engine.dispose)
        migration.upgrade(self.engine)

    def lock(self, timeout=5.0):
        engine = api.create_engine(self.url)
        self.addCleanup(engine.dispose)
        return locks.PassLock(engine, timeout=timeout)

    def test_holders_take_turns(self):
        inside = []
        overlaps = []

        def hold(lock):
            for _ in range(5):
                with lock.hold():
                    inside.append(1)
                    if len(inside) > 1:
                        overlaps.append(1)
                    time.sleep(0.01)
                    inside.pop()

        threads = [threading.Thread(target=hold, args=(self.lock(),))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual([], overlaps)

    def test_busy_lock_times_out(self):
        holder, waiter = self.lock(), self.lock(timeout=0.3)
        with holder.hold():
            started = time.time()
            self.assertRaises(locks.LockTimeout,
                              waiter.hold().__enter__)
            self.assertLess(time.time() - started, 3)
        with waiter.hold():
            pass

    def test_another_process_holds_it(self):
        child = subprocess.Popen(
            [sys.executable, '-c', LOCK_CHILD, self.url, '1.0'],
            stdout=subprocess.PIPE, text=True)
        self.addCleanup(child.wait)
        self.assertEqual('held\n', child.stdout.readline())
        started = time.time()
        with self.lock().hold():
            waited = time.time() - started
        self.assertGreater(waited, 0.5)

    def test_lock_of_a_dead_process_is_free(self):
        child = subprocess.Popen(
            [sys.executable, '-c', LOCK_CHILD, self.url, '60'],
            stdout=subprocess.PIPE, text=True)
        self.assertEqual('held\n', child.stdout.readline())
        child.kill()
        child.wait()
        started = time.time()
        with self.lock().hold():
            self.assertLess(time.time() - started, 3)

    def test_missing_row_is_made(self):
        with self.engine.begin() as conn:
            conn.execute(locks.LOCKS.delete())
        with self.lock().hold():
            pass


class TestPassLockSQLite(PassLockTests, base.TestCase):

    def make_url(self):
        path = self.useFixture(fixtures.TempDir()).path
        return 'sqlite:///%s/fleetflow.sqlite' % path


class TestPassLockPostgres(PassLockTests, base.TestCase):

    def make_url(self):
        return db_urls.postgres_url(self)


class TestSharedStateOnPostgres(base.TestCase):
    """The compare-and-set hand-offs hold between racing processes."""

    def setUp(self):
        super().setUp()
        url = db_urls.postgres_url(self)
        engine = api.create_engine(url)
        self.addCleanup(engine.dispose)
        migration.upgrade(engine)
        self.stores = []
        for _ in range(4):
            engine = api.create_engine(url)
            self.addCleanup(engine.dispose)
            self.stores.append(api.Store(engine))
        self.store = self.stores[0]

    def race(self, attempt):
        """Run ``attempt(store)`` in a thread per store, all at once."""
        barrier = threading.Barrier(len(self.stores))
        results = []

        def run(store):
            barrier.wait()
            results.append(attempt(store))

        threads = [threading.Thread(target=run, args=(store,))
                   for store in self.stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    def test_a_request_is_served_by_one_launcher(self):
        for _ in range(10):
            request = self.store.create_request(['small'])

            def serve(store):
                try:
                    store.set_request_state(
                        request['id'], models.PENDING,
                        expected=[models.REQUESTED], launcher=str(id(store)))
                    return True
                except exceptions.NodeStateConflict:
                    return False

            self.assertEqual([True], [r for r in self.race(serve) if r])

    def test_a_ready_node_goes_to_one_request(self):
        for _ in range(10):
            node = self.store.create_node('small', 'p', 'main',
                                          state=node_states.READY)
            requests = iter([self.store.create_request(['small'])['id']
                             for _ in self.stores])
            lock = threading.Lock()

            def assign(store):
                with lock:
                    request_id = next(requests)
                return store.assign_node(node['id'], request_id)

            self.assertEqual([True], [r for r in self.race(assign) if r])


def board_fleet(testcase, backend, claim_expiry, **kwargs):
    """A fleet whose flows go through the jobboard of ``backend``.

    :returns: ``(fixture, connected board, jobboard runner)``
    """
    where = board_servers.address(testcase, backend)
    ff = testcase.useFixture(base.FleetflowFixture(
        runner=False, conf_overrides=jobboard_overrides(
            testcase, enabled=True, backend=backend, hosts=[where],
            namespace=board_servers.namespace(testcase, backend, where),
            claim_expiry=claim_expiry, conductor_workers=4),
        **kwargs))
    board = ff_board.Board(ff.conf, ff.ctx.persistence)
    board.connect()
    testcase.addCleanup(board.close)
    runner = posting.JobboardRunner(ff.ctx, board,
                                    locks.PassLock(ff.ctx.engine))
    testcase.addCleanup(runner.stop)
    return ff, board, runner


class BoardTests:
    """In-process runner and conductor on the backend ``backend`` names."""

    backend = None
    claim_expiry = 2

    def setUp(self):
        super().setUp()
        self.ff, self.board, self.runner = board_fleet(
            self, self.backend, self.claim_expiry, create_latency=1.5)

    def conductor(self, **kwargs):
        conductor = ff_conductor.Conductor(self.ff.ctx, self.board, **kwargs)
        conductor.start()
        self.addCleanup(conductor.stop)
        return conductor

    def jobs(self):
        return {job['node_id']: job for job in self.board.describe()}

    def test_launch_posts_a_job(self):
        node = self.ff.create_node()
        self.runner.refresh()
        self.runner.launch(node)
        job = self.jobs()[node['id']]
        flow_id = self.ff.node(node['id'])['flow_id']
        self.assertEqual(('launch-%s' % node['id'], flow_id, 'UNCLAIMED',
                          None), (job['name'], job['flow_uuid'],
                                  job['state'], job['owner']))
        posted = self.board.jobs()[0]
        self.assertNotIn('store', posted.details)
        self.assertEqual(node['id'], posted.book_uuid)
        self.assertTrue(self.runner.is_running(node['id']))
        self.assertEqual(1, self.runner.running())
        self.assertRaises(exceptions.FleetflowError, self.runner.launch,
                          node)

    def record_only(self, node):
        """Record the node's launch, as a launcher that died before posting."""
        post = self.board.post
        self.board.post = mock.Mock(side_effect=RuntimeError('died'))
        try:
            self.runner.refresh()
            self.assertRaises(RuntimeError, self.runner.launch, node)
        finally:
            self.board.post = post
        return self.ff.node(node['id'])['flow_id']

    def test_unfinished_flow_is_posted_again_not_recorded_again(self):
        node = self.ff.create_node()
        flow_id = self.record_only(node)
        self.runner.refresh()
        self.runner.launch(self.ff.node(node['id']))
        self.assertEqual(flow_id, self.jobs()[node['id']]['flow_uuid'])
        self.assertEqual(flow_id, self.ff.node(node['id'])['flow_id'])
        self.assertEqual(1, len(flowinfo.describe_flows(
            self.ff.ctx, node['id'])))

    def test_unfinished_flow_that_no_longer_applies_is_not_posted(self):
        # A launch another conductor finished while this copy of it
        # stopped unfinished: the node is used, and must be deleted.
        node = self.ff.create_node()
        stale = self.record_only(node)
        self.ff.store.set_node_state(node['id'], node_states.READY)
        self.ff.store.set_node_state(node['id'], node_states.USED)
        self.runner.refresh()
        self.runner.delete(self.ff.node(node['id']))
        job = self.jobs()[node['id']]
        self.assertEqual('delete-%s' % node['id'], job['name'])
        self.assertNotEqual(stale, job['flow_uuid'])
        self.assertEqual(job['flow_uuid'],
                         self.ff.node(node['id'])['flow_id'])

    def test_a_planted_unfinished_flow_is_not_posted(self):
        node = self.ff.create_node()
        evil = test_registry.plant(self.ff.ctx.persistence, node['id'],
                                   'os.system', args=['true'])
        self.ff.store.update_node(node['id'], flow_id=evil.uuid)
        self.runner.refresh()
        self.runner.launch(self.ff.node(node['id']))
        job = self.jobs()[node['id']]
        self.assertNotEqual(evil.uuid, job['flow_uuid'])
        self.assertEqual(job['flow_uuid'],
                         self.ff.node(node['id'])['flow_id'])
        self.assertIn("factory 'os.system' is not a registered flow "
                      "factory", self.logger.output)

    def test_resume_all_posts_what_has_no_job(self):
        posted = self.ff.create_node()
        lost = self.ff.create_node()
        self.runner.refresh()
        self.runner.launch(posted)
        flow_id = self.record_only(lost)
        self.assertEqual(1, self.runner.resume_all())
        jobs = self.jobs()
        self.assertEqual({posted['id'], lost['id']}, set(jobs))
        self.assertEqual(flow_id, jobs[lost['id']]['flow_uuid'])
        self.assertEqual(0, self.runner.resume_all())

    def test_a_waiting_flow_holds_its_worker_without_spinning(self):
        polls = collections.Counter()
        lookup = instance_cache.InstanceCache.lookup

        def counted(cache, *args):
            polls['active'] += 1
            return lookup(cache, *args)

        self.useFixture(fixtures.MockPatchObject(
            instance_cache.InstanceCache, 'lookup', counted))
        conductor = self.conductor()
        node = self.ff.create_node()
        self.runner.refresh()
        self.runner.launch(node)
        self.ff.wait_for(lambda: conductor.waiting() == 1, timeout=10)
        self.assertEqual(1, conductor.running())
        self.ff.wait_for(lambda: self.ff.node(node['id'])['state']
                         == node_states.READY, timeout=20)
        # 1.5 s of create latency, one poll per listing change or 0.2 s.
        self.assertLess(polls['active'], 20)

    def test_claim_outlives_its_expiry_while_the_flow_runs(self):
        conductor = self.conductor()
        node = self.ff.create_node()
        # A flow that runs for longer than a claim expiry.
        self.ff.driver.create_latency = 2 * self.claim_expiry
        self.runner.refresh()
        self.runner.launch(node)
        self.ff.wait_for(lambda: self.jobs()[node['id']]['state']
                         == 'CLAIMED', timeout=10)
        owners = set()
        while self.ff.node(node['id'])['state'] != node_states.READY:
            job = self.jobs().get(node['id'])
            if job:
                owners.add(job['owner'])
            time.sleep(0.1)
        self.assertEqual({conductor.name}, owners - {None})
        self.assertEqual(1, len(self.ff.driver.instance_history()))

    def test_a_job_not_consumed_for_a_board_error_is_consumed_later(self):
        consume = self.board.jobboard.consume
        failed = []

        def consume_once_failing(job, who):
            if not failed:
                failed.append(job.uuid)
                raise tf_exceptions.JobFailure('connection lost')
            return consume(job, who)

        self.useFixture(fixtures.MockPatchObject(
            self.board.jobboard, 'consume',
            side_effect=consume_once_failing))
        self.conductor()
        node = self.ff.create_node()
        self.runner.refresh()
        self.runner.launch(node)
        self.ff.wait_for(lambda: failed, timeout=20)
        # The job leaves the board: its claim does not hold it there.
        self.ff.wait_for(lambda: node['id'] not in self.jobs(), timeout=20)
        self.assertEqual(node_states.READY, self.ff.node(node['id'])['state'])

    def test_stopped_conductor_gives_its_jobs_back(self):
        first = ff_conductor.Conductor(self.ff.ctx, self.board)
        first.start()
        self.ff.driver.create_latency = 3
        node = self.ff.create_node()
        self.runner.refresh()
        self.runner.launch(node)
        self.ff.wait_for(lambda: first.waiting() == 1, timeout=10)
        first.stop()
        job = self.jobs()[node['id']]
        self.assertEqual(('UNCLAIMED', None), (job['state'], job['owner']))
        second = self.conductor()
        self.ff.wait_for(lambda: self.ff.node(node['id'])['state']
                         == node_states.READY, timeout=20)
        self.assertNotEqual(first.name, second.name)
        self.assertEqual(1, len(self.ff.driver.instance_history()))

    def test_flow_moves_between_processes(self):
        # Another process: its own context, persistence and board.
        other = context.Context(self.ff.conf, self.ff.layout)
        other.start()
        self.addCleanup(other.stop)
        board = ff_board.Board(self.ff.conf, other.persistence)
        board.connect()
        self.addCleanup(board.close)
        elsewhere = ff_conductor.Conductor(other, board)
        elsewhere.start()
        self.ff.driver.create_latency = 3
        node = self.ff.create_node()
        self.runner.refresh()
        self.runner.launch(node)
        self.ff.wait_for(lambda: elsewhere.waiting() == 1, timeout=10)
        elsewhere.stop()
        # Back to this process, which recorded the flow before the other
        # one ran it.
        self.conductor()
        self.ff.wait_for(lambda: self.ff.node(node['id'])['state']
                         == node_states.READY, timeout=20)
        self.assertEqual(1, len(self.ff.driver.instance_history()))

    def in_use_node(self):
        node = self.ff.create_node()
        self.runner.refresh()
        self.runner.launch(node)
        self.ff.wait_for(lambda: self.ff.node(node['id'])['state']
                         == node_states.READY, timeout=20)
        self.ff.wait_for(lambda: node['id'] not in self.jobs(), timeout=10)
        self.ff.store.set_node_state(node['id'], node_states.IN_USE)
        return self.ff.node(node['id'])

    def record_delete(self, node):
        return self.runner.record_flow(
            node['id'], 'delete',
            dict(node_id=node['id'], provider=node['provider'],
                 delete_timeout=30))[1]

    def forge(self, book_id, flow_uuid, node_id=None, **details):
        """Post a job as whoever can write to the board alone can."""
        book = tf_models.LogBook('node-%s' % book_id, uuid=book_id)
        details.update(flow_uuid=flow_uuid, node_id=node_id or book_id)
        return self.board.jobboard.post('delete-%s' % book_id, book=book,
                                        details=details)

    def test_forged_jobs_are_refused(self):
        self.ff.driver.create_latency = 0
        self.conductor()
        victim = self.in_use_node()
        used = self.ff.create_node(state=node_states.USED)
        # An old delete flow of a node, reverted, and its current one.
        old = self.record_delete(used)
        old.state = states.REVERTED
        with contextlib.closing(self.ff.ctx.persistence.get_connection()) \
                as conn:
            conn.update_flow_details(old)
        current = self.record_delete(used)
        # A delete flow of the in-use node (none is run while it is, nor
        # recorded: planted as one who can write the tables could).
        base.force_node_state(self.ff.store, victim['id'], node_states.USED)
        premature = self.record_delete(victim)
        base.force_node_state(self.ff.store, victim['id'],
                              node_states.IN_USE)
        self.forge(used['id'], old.uuid, store={'node_id': victim['id']})
        self.forge(victim['id'], current.uuid)
        self.forge(used['id'], current.uuid, node_id=victim['id'])
        self.forge(victim['id'], premature.uuid)
        # A flow detail row naming another callable than a registered
        # factory, made the node's current flow.
        planted = self.ff.create_node()
        marker = os.path.join(self.ff.state_path, 'attacker-was-here')
        evil = test_registry.plant(self.ff.ctx.persistence, planted['id'],
                                   'os.system', args=['touch ' + marker])
        self.ff.store.update_node(planted['id'], flow_id=evil.uuid)
        self.forge(planted['id'], evil.uuid)
        self.ff.wait_for(lambda: not self.jobs(), timeout=20)
        self.assertFalse(os.path.exists(marker))
        # The current flow of the used node, with a store that names the
        # in-use node: the flow runs with its own inputs.
        self.forge(used['id'], current.uuid, store={'node_id': victim['id']})
        self.ff.wait_for(lambda: self.ff.node(used['id']) is None,
                         timeout=20)
        self.ff.wait_for(lambda: not self.jobs(), timeout=20)
        self.assertEqual(node_states.IN_USE,
                         self.ff.node(victim['id'])['state'])
        self.assertEqual([victim['external_id']],
                         [i.external_id for i in self.ff.instances()])
        log = self.logger.output
        for reason in (
                'flow %s is not the current flow of node %s'
                % (old.uuid, used['id']),
                "flow %s is not in node %s's logbook"
                % (current.uuid, victim['id']),
                "its logbook %s is not its node %s's"
                % (used['id'], victim['id']),
                'node %s is in-use; a delete flow acts on a node that is '
                'aborted, deleting, failed, used' % victim['id'],
                "SECURITY: [node %s] flow detail %s ('launch-%s') refused: "
                "factory 'os.system' is not a registered flow factory"
                % (planted['id'], evil.uuid, planted['id'])):
            self.assertIn(reason, log)
        self.assertEqual(4, log.count('SECURITY: job'))

    def test_a_job_whose_flow_is_done_is_consumed_not_run(self):
        self.ff.driver.create_latency = 0
        self.conductor()
        node = self.in_use_node()
        # Its launch flow ended, and is still its current flow.
        flow_id = self.ff.node(node['id'])['flow_id']
        self.forge(node['id'], flow_id)
        self.ff.wait_for(lambda: not self.jobs(), timeout=20)
        self.assertEqual(node_states.IN_USE, self.ff.node(node['id'])['state'])
        self.assertIn('not run: flow %s of node %s ended SUCCESS'
                      % (flow_id, node['id']), self.logger.output)
        self.assertNotIn('SECURITY', self.logger.output)


class TestRedisBoard(BoardTests, base.TestCase):
    backend = 'redis'

    def test_lost_claim_stops_the_flow(self):
        self.ff.driver.create_latency = 30
        conductor = self.conductor()
        node = self.ff.create_node()
        self.runner.refresh()
        self.runner.launch(node)
        self.ff.wait_for(lambda: conductor.waiting() == 1, timeout=10)
        job = self.board.jobs()[0]
        # Another conductor took it (this host stalled past the expiry).
        self.board.jobboard._client.set(job.owner_key, b'someone-else')
        self.ff.wait_for(lambda: conductor.running() == 0, timeout=10)
        self.ff.wait_for(lambda: conductor.waiting() == 0, timeout=10)
        self.assertEqual('someone-else', self.jobs()[node['id']]['owner'])
        self.ff.wait_for(lambda: self.flow_state(node['id'])
                         == states.SUSPENDED, timeout=10)

    def test_an_expired_claim_is_not_run_twice_here(self):
        self.ff.driver.create_latency = 30
        conductor = self.conductor()
        runs = {'now': 0, 'most': 0, 'started': 0}

        def started(event_type, details):
            runs['now'] += 1
            runs['started'] += 1
            runs['most'] = max(runs['most'], runs['now'])

        def ended(event_type, details):
            runs['now'] -= 1

        conductor._conductor.notifier.register('compilation_start', started)
        conductor._conductor.notifier.register('running_end', ended)
        node = self.ff.create_node()
        self.runner.refresh()
        self.runner.launch(node)
        self.ff.wait_for(lambda: conductor.waiting() == 1, timeout=10)
        # The claim expired while the flow waits (this host stalled past
        # the expiry); nobody else took the job.
        job = self.board.jobs()[0]
        self.board.jobboard._client.delete(job.owner_key)
        # The flow stops here, and is then claimed again and resumed: one
        # copy at a time.
        self.ff.wait_for(lambda: runs['started'] == 2, timeout=20)
        self.assertEqual(1, runs['most'])
        self.ff.wait_for(lambda: conductor.waiting() == 1, timeout=10)
        self.assertEqual(conductor.name, self.jobs()[node['id']]['owner'])
        self.assertIn('Lost the claim on job %s' % job.uuid,
                      self.logger.output)
        self.assertEqual(1, len(self.ff.driver.instance_history()))

    def test_a_claim_not_renewed_in_time_stops_the_flow(self):
        # The flow waits for longer than the expiry.
        self.ff.driver.create_latency = 2 * self.claim_expiry
        conductor = self.conductor()
        ended = []
        conductor._conductor.notifier.register(
            'running_end', lambda event_type, details: ended.append(
                details['engine'].storage.get_flow_state()))
        node = self.ff.create_node()
        self.runner.refresh()
        self.runner.launch(node)
        self.ff.wait_for(lambda: conductor.waiting() == 1, timeout=10)
        job = self.board.jobs()[0]
        # The host stalls: its claim is not renewed, and when the host runs
        # again its flow goes on before the keeper looks at the claim.
        conductor._claims.stop()
        # The flow stops at its next task boundary.
        self.ff.wait_for(lambda: ended, timeout=20)
        self.assertEqual(states.SUSPENDED, ended[0])
        self.assertIn('The claim on job %s (flow launch-%s) was not '
                      'renewed for over %ss' % (job.uuid, node['id'],
                                                self.claim_expiry),
                      self.logger.output)

    def flow_state(self, node_id):
        flows = flowinfo.describe_flows(self.ff.ctx, node_id)
        return flows[0]['state']


class TestZooKeeperBoard(BoardTests, base.TestCase):
    backend = 'zookeeper'
    # ZooKeeper's shortest session with its default tick (2 s).
    claim_expiry = 4


class TestZooKeeperAccess(base.TestCase):
    """Who can use the jobboard's znodes, and how it talks to ZooKeeper."""

    def board(self, where, **options):
        # Dropped on cleanup through the plain port.
        namespace = board_servers.namespace(
            self, 'zookeeper', board_servers.address(self, 'zookeeper'))
        conf = base.make_conf('/tmp/unused', overrides=jobboard_overrides(
            self, enabled=True, backend='zookeeper', hosts=[where],
            namespace=namespace, claim_expiry=4, **options))
        board = ff_board.Board(conf)
        self.addCleanup(board.close)
        return board

    def post(self, board):
        book = tf_models.LogBook('node', uuid=str(uuid.uuid4()))
        return board.jobboard.post('launch-%s' % book.uuid, book=book,
                                   details={'node_id': book.uuid,
                                            'flow_uuid': 'f'})

    def test_znodes_are_the_configured_identity_s_only(self):
        from kazoo import client as kazoo_client
        from kazoo import exceptions as kazoo_exceptions
        where = board_servers.address(self, 'zookeeper')
        board = self.board(where, username='fleet', password='s3cret')
        board.connect()
        job = self.post(board)
        # The namespace is removed with the identity's rights.
        self.addCleanup(board._client.delete, '/fleetflow/%s'
                        % board.namespace, recursive=True)
        acls, _stat = board._client.get_acls(job.path)
        self.assertEqual([('digest', 'fleet')],
                         [(acl.id.scheme, acl.id.id.split(':')[0])
                          for acl in acls])
        anonymous = kazoo_client.KazooClient(hosts=where)
        anonymous.start(timeout=10)
        self.addCleanup(anonymous.close)
        self.addCleanup(anonymous.stop)
        jobs_path = board.options['path']
        for attempt in (lambda: anonymous.set(job.path, b'{}'),
                        lambda: anonymous.delete(job.path),
                        lambda: anonymous.get(job.path),
                        lambda: anonymous.create(jobs_path + '/forged',
                                                 b'{}')):
            self.assertRaises(kazoo_exceptions.NoAuthError, attempt)
        self.assertEqual([job.uuid], [j.uuid for j in board.jobs()])

    def tls_board(self, host='localhost', ca_file=None):
        where = board_servers.address(self, 'zookeeper-tls')
        port = where.rsplit(':', 1)[1]
        tls = board_servers.TLS_DIR
        return self.board('%s:%s' % (host, port), tls=True,
                          tls_ca_file=ca_file or os.path.join(tls, 'ca.pem'),
                          tls_cert_file=os.path.join(tls, 'client.pem'),
                          tls_key_file=os.path.join(tls, 'client.key'))

    def test_tls_with_the_configured_ca(self):
        board = self.tls_board()
        board.connect()
        job = self.post(board)
        self.assertEqual([job.uuid], [j.uuid for j in board.jobs()])
        # Only the configured CA is trusted, not the system's.
        context = board._client.handler.context
        self.assertEqual([((('commonName', 'fleetflow test CA'),),)],
                         [ca['subject'] for ca in context.get_ca_certs()])

    def test_tls_refuses_a_host_its_certificate_does_not_name(self):
        # 127.0.0.2 reaches the same server, whose certificate names
        # 127.0.0.1, ::1 and localhost only.
        board = self.tls_board(host='127.0.0.2')
        self.assertRaises(tf_exceptions.JobFailure, board.connect)
        self.assertIn("IP address mismatch, certificate is not valid for "
                      "'127.0.0.2'", self.logger.output)

    def test_tls_refuses_a_server_of_another_ca(self):
        other = self.useFixture(fixtures.TempDir()).path
        subprocess.run([os.path.join(os.path.dirname(__file__), '..', '..',
                                     'tools', 'test-tls'), other],
                       check=True, capture_output=True)
        board = self.tls_board(ca_file=os.path.join(other, 'ca.pem'))
        self.assertRaises(tf_exceptions.JobFailure, board.connect)
        self.assertIn('certificate verify failed: unable to get local '
                      'issuer certificate', self.logger.output)


class TestJobboardLauncherPass(base.TestCase):
    """A launcher's pass posting jobs, on SQLite, its board in Redis."""

    def test_adopts_what_a_dead_launcher_left(self):
        where = board_servers.address(self, 'redis')
        ff = self.useFixture(base.FleetflowFixture(
            runner=False, conf_overrides=jobboard_overrides(
                self, enabled=True, backend='redis', hosts=[where],
                namespace=board_servers.namespace(self, 'redis', where))))
        board = ff_board.Board(ff.conf, ff.ctx.persistence)
        board.connect()
        self.addCleanup(board.close)
        launcher = ff_launcher.Launcher(ff.ctx, posting.JobboardRunner(
            ff.ctx, board, locks.PassLock(ff.ctx.engine)))
        self.addCleanup(launcher.runner.stop)
        request = ff.store.create_request(['small'])
        ff.store.set_request_state(request['id'], models.PENDING,
                                   launcher='dead-host', provider='fake-1',
                                   pool='main')
        node = ff.create_node(request_id=request['id'],
                              launcher='dead-host')
        launcher.run_pass()
        self.assertTrue(launcher.runner.is_running(node['id']))
        self.assertEqual(1, len(board.jobs()))
        # Its launch is done (by some conductor): the request is settled.
        ff.store.set_node_state(node['id'], node_states.READY)
        for job in board.jobs():
            board.jobboard.claim(job, 'c')
            board.jobboard.consume(job, 'c')
        launcher.run_pass()
        self.assertEqual(models.FULFILLED,
                         ff.store.get_request(request['id'])['state'])
        launcher.run_pass()
        self.assertEqual(0, len(board.jobs()))


class TestJobList(base.TestCase):
    """``fleetflow job list`` against a Redis jobboard."""

    def test_lists_jobs_with_owner_and_state(self):
        from tests.unit import test_cli
        where = board_servers.address(self, 'redis')
        namespace = board_servers.namespace(self, 'redis', where)
        env = self.useFixture(test_cli.CliEnv(conf={'jobboard': {
            'enabled': 'true', 'hosts': where, 'namespace': namespace}}))
        conf = base.make_conf(env.state_path, overrides=jobboard_overrides(
            self, enabled=True, hosts=[where], namespace=namespace))
        board = ff_board.Board(conf)
        board.connect()
        self.addCleanup(board.close)
        first = board.jobboard.post('launch-n1', details={
            'node_id': 'n1', 'flow_uuid': 'f1', 'store': {}})
        board.jobboard.post('delete-n2', details={
            'node_id': 'n2', 'flow_uuid': 'f2', 'store': {}})
        board.jobboard.claim(first, 'host-a-1f2e3d')
        rows = env.json('job', 'list')
        self.assertEqual(
            [('launch-n1', 'n1', 'f1', 'CLAIMED', 'host-a-1f2e3d'),
             ('delete-n2', 'n2', 'f2', 'UNCLAIMED', None)],
            [(r['name'], r['node_id'], r['flow_uuid'], r['state'],
              r['owner']) for r in rows])
        self.assertTrue(test_cli.is_iso_utc(rows[0]['created_on']))

    def test_a_job_that_loses_its_owner_while_listed(self):
        where = board_servers.address(self, 'redis')
        board = ff_board.Board(base.make_conf('/tmp/unused', overrides=(
            jobboard_overrides(self, enabled=True, hosts=[where],
                               namespace=board_servers.namespace(
                                   self, 'redis', where)))))
        board.connect()
        self.addCleanup(board.close)
        jobs = {name: board.jobboard.post(name, details={'node_id': name})
                for name in ('consumed', 'abandoned', 'kept')}
        for job in jobs.values():
            board.jobboard.claim(job, 'host-a')
        self.assertNotIn(None, [board.owner(job) for job in jobs.values()])
        # Each loses its claim right after its state is read, once.
        read = impl_redis.RedisJob.state.fget
        ends = {'consumed': board.jobboard.consume,
                'abandoned': board.jobboard.abandon}

        def state_then_gone(job):
            state = read(job)
            end = ends.pop(job.name, None)
            if end is not None:
                end(job, 'host-a')
            return state

        with mock.patch.object(impl_redis.RedisJob, 'state',
                               property(state_then_gone)):
            rows = board.describe()
        self.assertEqual({}, ends)
        self.assertEqual(
            [('abandoned', 'UNCLAIMED', None), ('kept', 'CLAIMED', 'host-a')],
            sorted((row['name'], row['state'], row['owner'])
                   for row in rows))
        self.assertIsNone(board.owner(jobs['abandoned']))

    def test_needs_the_jobboard(self):
        from tests.unit import test_cli
        env = self.useFixture(test_cli.CliEnv())
        result = env.cli('job', 'list')
        self.assertEqual(1, result.rc, result)
        self.assertIn('the jobboard is not enabled', result.stderr)
