"""The node store: migrations and compare-and-set state changes."""

import os
import tempfile
import threading

import fixtures
import sqlalchemy as sa
import testtools

from fleetflow.db import api
from fleetflow.db import migration
from fleetflow.db import models
from fleetflow import exceptions
from fleetflow import node_states
from tests import base
from tests import db_urls

TABLES = {'fleetflow_nodes', 'fleetflow_requests',
          'fleetflow_alembic_version', 'logbooks', 'flowdetails',
          'atomdetails'}


class StoreTests:
    """Run against the engine ``make_url`` gives."""

    def setUp(self):
        super().setUp()
        self.engine = api.create_engine(self.make_url())
        self.addCleanup(self.engine.dispose)
        migration.upgrade(self.engine)
        self.store = api.Store(self.engine)

    def test_migrations_create_everything(self):
        self.assertTrue(TABLES <= set(sa.inspect(self.engine)
                                      .get_table_names()))
        self.assertEqual('0003', migration.current_revision(self.engine))
        migration.upgrade(self.engine)
        self.assertEqual('0003', migration.current_revision(self.engine))

    def test_taskflow_keeps_its_own_version_table(self):
        with self.engine.connect() as conn:
            own = conn.execute(sa.text(
                'SELECT version_num FROM fleetflow_alembic_version')).all()
        self.assertEqual([('0003',)], own)

    def test_node_fields_round_trip(self):
        node = self.store.create_node('small', 'p', 'main',
                                      username='zuul', host_keys=['k a'])
        got = self.store.get_node(node['id'])
        self.assertEqual(('small', 'p', 'main', node_states.BUILDING, 'zuul',
                          ['k a'], 0),
                         (got['label'], got['provider'], got['pool'],
                          got['state'], got['username'], got['host_keys'],
                          got['launch_attempts']))
        self.assertIsNone(got['ready_at'])
        self.store.set_node_state(node['id'], node_states.READY,
                                  expected=[node_states.BUILDING])
        self.assertIsNotNone(self.store.get_node(node['id'])['ready_at'])

    def test_compare_and_set_refuses_wrong_state(self):
        node = self.store.create_node('small', 'p', 'main')
        self.assertRaises(exceptions.NodeStateConflict,
                          self.store.set_node_state, node['id'],
                          node_states.IN_USE, expected=[node_states.READY])
        self.assertEqual(node_states.BUILDING,
                         self.store.get_node(node['id'])['state'])

    def test_update_only_in_expected_states(self):
        node = self.store.create_node('small', 'p', 'main')
        self.assertTrue(self.store.update_node(
            node['id'], expected=[node_states.BUILDING], external_id='i-1'))
        self.store.set_node_state(node['id'], node_states.READY)
        self.assertFalse(self.store.update_node(
            node['id'], expected=[node_states.BUILDING], external_id=None))
        self.assertEqual('i-1', self.store.get_node(node['id'])['external_id'])

    def test_only_one_thread_takes_a_node(self):
        nodes = [self.store.create_node('small', 'p', 'main',
                                        state=node_states.READY)
                 for _ in range(5)]
        wins = []
        barrier = threading.Barrier(8)

        def worker(number):
            barrier.wait()
            for node in nodes:
                if self.store.assign_node(node['id'], 'req-%d' % number):
                    wins.append((node['id'], number))

        threads = [threading.Thread(target=worker, args=(n,))
                   for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(sorted(n['id'] for n in nodes),
                         sorted(node_id for node_id, _ in wins))
        for node_id, number in wins:
            self.assertEqual('req-%d' % number,
                             self.store.get_node(node_id)['request_id'])

    def test_concurrent_state_changes_have_one_winner(self):
        node = self.store.create_node('small', 'p', 'main',
                                      state=node_states.READY)
        outcomes = []
        barrier = threading.Barrier(8)

        def worker():
            barrier.wait()
            try:
                self.store.set_node_state(node['id'], node_states.IN_USE,
                                          expected=[node_states.READY])
                outcomes.append('won')
            except exceptions.NodeStateConflict:
                outcomes.append('lost')

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(['lost'] * 7 + ['won'], sorted(outcomes))

    def test_requests_order_and_release(self):
        low = self.store.create_request(['small'], priority=200)
        high = self.store.create_request(['small'], priority=50)
        later = self.store.create_request(['small'], priority=50)
        self.assertEqual([high['id'], later['id'], low['id']],
                         [r['id'] for r in self.store.list_requests()])
        node = self.store.create_node('small', 'p', 'main',
                                      state=node_states.IN_USE,
                                      request_id=high['id'])
        self.store.release_request(high['id'])
        released = self.store.get_node(node['id'])
        self.assertEqual((node_states.USED, None),
                         (released['state'], released['request_id']))
        self.assertRaises(exceptions.FleetflowError,
                          self.store.get_request, high['id'])

    def test_serving_reuses_spares_and_launches_the_rest(self):
        first = self.store.create_request(['small', 'small'])
        second = self.store.create_request(['small'])
        spare, taken = [self.store.create_node('small', 'p', 'main',
                                               state=node_states.READY)
                        for _ in range(2)]
        self.assertTrue(self.store.assign_node(taken['id'], 'other'))

        def plan(request, reuse, launch):
            return dict(request_id=request['id'], provider='p', pool='main',
                        launcher='host-a', reuse=reuse, launch=launch)

        served = self.store.serve_requests([
            plan(first, [spare['id'], taken['id']], []),
            plan(first, [], ['small']),
            plan(second, [], ['small'])])
        # The spare taken meanwhile is launched instead; the request
        # served by the first plan is no longer requested for the second.
        self.assertEqual([['small'], None, ['small']],
                         [None if nodes is None else
                          [node['label'] for node in nodes]
                          for nodes in served])
        self.assertEqual(first['id'],
                         self.store.get_node(spare['id'])['request_id'])
        building = self.store.list_nodes(states=[node_states.BUILDING])
        self.assertEqual(sorted([first['id'], second['id']]),
                         sorted(node['request_id'] for node in building))
        self.assertEqual({'host-a'}, {n['launcher'] for n in building})
        request = self.store.get_request(first['id'])
        self.assertEqual((models.PENDING, 'p', 'main', 'host-a'),
                         (request['state'], request['provider'],
                          request['pool'], request['launcher']))

    def test_fulfil_takes_every_ready_node_or_none(self):
        request = self.store.create_request(['small', 'small'])
        self.store.set_request_state(request['id'], models.PENDING)
        nodes = [self.store.create_node('small', 'p', 'main',
                                        state=node_states.READY,
                                        request_id=request['id'])
                 for _ in range(2)]
        ids = [node['id'] for node in nodes]
        self.store.set_node_state(ids[1], node_states.USED)
        self.assertFalse(self.store.fulfil_request(request['id'], ids))
        self.assertEqual(node_states.READY,
                         self.store.get_node(ids[0])['state'])
        self.assertEqual(models.PENDING,
                         self.store.get_request(request['id'])['state'])
        base.force_node_state(self.store, ids[1], node_states.READY)
        self.assertTrue(self.store.fulfil_request(request['id'], ids))
        self.assertEqual([node_states.IN_USE] * 2, [
            self.store.get_node(node_id)['state'] for node_id in ids])
        self.assertEqual(models.FULFILLED,
                         self.store.get_request(request['id'])['state'])
        # Fulfilled once: a second time finds it no longer pending.
        base.force_node_state(self.store, ids[0], node_states.READY)
        base.force_node_state(self.store, ids[1], node_states.READY)
        self.assertFalse(self.store.fulfil_request(request['id'], ids))
        self.assertEqual(node_states.READY,
                         self.store.get_node(ids[0])['state'])

    def test_lists_filter_by_state_and_columns_in_order(self):
        made = [self.store.create_node('small', provider, 'main')
                for provider in ('p1', 'p2', 'p1')]
        self.store.set_node_state(made[2]['id'], node_states.READY)
        ids = lambda nodes: [node['id'] for node in nodes]  # noqa: E731
        self.assertEqual(ids(made), ids(self.store.list_nodes()))
        self.assertEqual([made[0]['id']], ids(self.store.list_nodes(
            states=[node_states.BUILDING], provider='p1')))
        self.assertEqual([made[0]['id'], made[2]['id']], ids(
            self.store.list_nodes(
                states=[node_states.BUILDING, node_states.READY],
                provider='p1')))
        self.assertEqual([], self.store.list_nodes(states=[]))
        self.assertEqual([], self.store.list_nodes(label='large'))

    def test_request_marker_changes_when_requests_need_a_pass(self):
        before = self.store.request_marker()
        request = self.store.create_request(['small'])
        added = self.store.request_marker()
        self.assertEqual(before[1] + 1, added[1])
        self.store.set_request_state(request['id'], models.PENDING)
        served = self.store.request_marker()
        # Fulfilled by the launcher that served it: no pass needed.
        self.store.set_request_state(request['id'], models.FULFILLED)
        self.assertEqual(served, self.store.request_marker())
        self.store.release_request(request['id'])
        self.assertNotEqual(added, self.store.request_marker())
        again = self.store.create_request(['small'])
        self.store.set_request_state(again['id'], models.PENDING)
        pending = self.store.request_marker()
        self.store.set_request_state(again['id'], models.REQUESTED)
        self.assertNotEqual(pending, self.store.request_marker())
        requested = self.store.request_marker()
        self.store.set_request_state(again['id'], models.REQUEST_FAILED)
        self.assertNotEqual(requested, self.store.request_marker())

    def test_reads_are_not_transactions_writes_are(self):
        node = self.store.create_node('small', 'p1', 'main')
        counts = self.store.transactions, self.store.statements
        self.store.get_node(node['id'])
        self.store.list_nodes()
        self.assertEqual(counts[0], self.store.transactions)
        self.assertEqual(counts[1] + 2, self.store.statements)
        self.store.update_node(node['id'], username='zuul')
        self.assertEqual(counts[0] + 1, self.store.transactions)

    def test_a_failed_statement_raises_sqlalchemys_error_and_rolls_back(self):
        node = self.store.create_node('small', 'p1', 'main')
        insert = self.store.db.statement(
            ('test-insert',), api.NODES.insert, sorted(node))
        with testtools.ExpectedException(sa.exc.IntegrityError):
            with self.store.db.begin() as tx:
                self.store.update_node(node['id'], tx=tx, username='zuul')
                tx.execute(insert, node)
        self.assertIsNone(self.store.get_node(node['id'])['username'])

    def test_request_needs_labels(self):
        self.assertRaises(exceptions.FleetflowError,
                          self.store.create_request, [])


class TestSQLiteStore(StoreTests, testtools.TestCase):

    def make_url(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(lambda: [os.unlink(os.path.join(tmp, f))
                                 for f in os.listdir(tmp)])
        return 'sqlite:///%s/store.sqlite' % tmp

    def test_database_files_private(self):
        directory = self.useFixture(fixtures.TempDir()).path
        umask = os.umask(0o022)
        self.addCleanup(os.umask, umask)
        engine = api.create_engine('sqlite:///%s/fleetflow.sqlite'
                                   % directory)
        self.addCleanup(engine.dispose)
        migration.upgrade(engine)
        api.Store(engine).create_node('small', 'p', 'main')
        files = sorted(os.listdir(directory))
        self.assertIn('fleetflow.sqlite-wal', files)
        for name in files:
            self.assertEqual(0o600, os.stat(os.path.join(
                directory, name)).st_mode & 0o777, name)

    def test_engines_take_turns_on_the_database(self):
        # As the flow processes' engines do: one waits while another
        # holds a connection, without SQLite's sleeping retries.
        directory = self.useFixture(fixtures.TempDir()).path
        url = 'sqlite:///%s/fleetflow.sqlite' % directory
        first, second = api.create_engine(url), api.create_engine(url)
        self.addCleanup(first.dispose)
        self.addCleanup(second.dispose)
        took = threading.Event()

        def take_a_turn():
            with second.connect():
                took.set()

        with first.connect():
            waiter = threading.Thread(target=take_a_turn)
            waiter.start()
            self.assertFalse(took.wait(0.5))
        waiter.join(10)
        self.assertTrue(took.is_set())

    def test_an_engine_leaves_no_descriptor_open(self):
        directory = self.useFixture(fixtures.TempDir()).path
        before = len(os.listdir('/proc/self/fd'))
        for _ in range(5):
            engine = api.create_engine('sqlite:///%s/fleetflow.sqlite'
                                       % directory)
            with engine.connect():
                pass
            engine.dispose()
        self.assertEqual(before, len(os.listdir('/proc/self/fd')))

    @testtools.skipUnless(os.path.exists('/proc/locks'), 'no /proc/locks')
    def test_a_new_engine_keeps_the_locks_of_open_connections(self):
        # Closing any descriptor of the database file would drop the POSIX
        # locks of this process's SQLite connections on it: another
        # process's SQLite then takes itself for the last one, removes the
        # -wal file as it closes, and this process stops seeing commits.
        path = self.engine.url.database
        self.store.create_node('small', 'p', 'main')
        held = _posix_locks(path)
        self.assertNotEqual([], held)
        api.create_engine(str(self.engine.url)).dispose()
        self.assertEqual(held, _posix_locks(path))


def _posix_locks(path):
    """This process's POSIX locks on the file ``path`` (/proc/locks)."""
    inode = os.stat(path).st_ino
    with open('/proc/locks') as f:
        rows = [line.split() for line in f]
    return sorted(row[3:] for row in rows
                  if row[1] == 'POSIX' and row[4] == str(os.getpid())
                  and row[5].rsplit(':', 1)[-1] == str(inode))


class TestPostgreSQLStore(StoreTests, testtools.TestCase):

    def make_url(self):
        return db_urls.postgres_url(self)
