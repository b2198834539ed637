"""One launcher per database without a jobboard: real launcher processes.

A second ``fleetflow-launcher`` on the same configuration would resume
the first one's unfinished flows beside it. It must refuse to start,
naming the holder's host and pid, and leave the first one's work alone;
a holder killed with SIGKILL must not keep a new launcher from starting.
"""

import os
import signal
import socket

import sqlalchemy as sa

from fleetflow.bench import launcher as bench
from fleetflow import client as ff_client
from tests import base
from tests import db_urls
from tests.functional import test_launcher

wait_for = test_launcher.wait_for


class OneLauncherTests:

    def db_url(self):
        return None

    def start_fleet(self, create_latency, flow_processes=1):
        url = self.db_url()
        conf = {'launcher': {'flow_processes': flow_processes}}
        if url:
            conf['database'] = {'connection': url}
        self.start(create_latency=create_latency, conf=conf)
        if url:
            # The client on the same database as the launchers.
            client_conf = base.make_conf(self.env.state_path, db_url=url)
            self.addCleanup(client_conf.clear_override, 'connection',
                            'database')
            self.client = ff_client.Client(client_conf, poll_interval=0.1)
            self.addCleanup(self.client.close)

    def test_second_launcher_refuses_to_start(self):
        self.start_fleet(create_latency=2.0)
        request = self.client.create_request(['small', 'small'])
        wait_for(lambda: len(self.history()) == 2,
                 message='the first launcher created no instances')
        second = self.start_launcher('launcher-2')
        self.assertEqual(1, second.proc.wait(60))
        self.assertIn(
            'fleetflow-launcher: error: another launcher runs the flows of '
            'this database: %s pid %d' % (socket.gethostname(),
                                          self.launcher.proc.pid),
            second.read_log())
        # The first one's flows were left to it: one instance per node,
        # one launch flow each, and it goes on serving.
        done = self.client.wait_for_request(request['id'], timeout=60)
        self.assertEqual('fulfilled', done['state'], done)
        self.assertEqual(2, self.creates())
        for node_id in done['nodes']:
            self.assertEqual({'launch-%s' % node_id: 'SUCCESS'},
                             self.flow_states(node_id))
        self.assertIsNone(self.launcher.proc.poll())

    def launch_one(self, flow_processes=1):
        """A request whose node's instance is being created; the request."""
        self.start_fleet(create_latency=1.0, flow_processes=flow_processes)
        request = self.client.create_request(['small'])
        wait_for(lambda: len(self.history()) == 1,
                 message='the first launcher created no instance')
        return request

    def assert_the_next_launcher_finishes(self, request):
        second = self.start_launcher('launcher-2')
        done = self.client.wait_for_request(request['id'], timeout=60)
        self.assertEqual('fulfilled', done['state'], done)
        self.assertIsNone(second.proc.poll())
        self.assertEqual(1, self.creates())

    def test_killed_holder_does_not_block_a_restart(self):
        request = self.launch_one()
        self.launcher.proc.kill()
        self.launcher.proc.wait()
        self.assert_the_next_launcher_finishes(request)

    def test_flow_processes_exit_with_a_killed_launcher(self):
        request = self.launch_one(flow_processes=2)
        flow_processes = bench.descendants(self.launcher.proc.pid)
        # Two flow processes, the server they are forked from, and
        # Python's resource tracker.
        self.assertGreaterEqual(len(flow_processes), 3)
        self.launcher.proc.kill()
        self.launcher.proc.wait()
        # They stop at once, as it did: none runs a flow that the next
        # launcher resumes.
        wait_for(lambda: not any(map(alive, flow_processes)), timeout=10,
                 message='flow processes outlived their launcher')
        self.assert_the_next_launcher_finishes(request)

    def test_ctrl_c_stops_the_launcher_and_its_flow_processes(self):
        request = self.launch_one(flow_processes=2)
        flow_processes = bench.descendants(self.launcher.proc.pid)
        # A terminal's Ctrl-C signals the whole process group: the flow
        # processes leave the stop to their launcher.
        os.killpg(self.launcher.proc.pid, signal.SIGINT)
        self.assertEqual(0, self.launcher.proc.wait(60))
        wait_for(lambda: not any(map(alive, flow_processes)), timeout=10,
                 message='flow processes outlived their launcher')
        log = self.launcher.read_log()
        self.assertNotIn('Traceback', log)
        self.assertNotIn('Flow process', log)
        self.assert_the_next_launcher_finishes(request)


def alive(pid):
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


class TestOneLauncherSQLite(OneLauncherTests,
                            test_launcher.LauncherTestCase):

    def test_lock_file_is_beside_the_database(self):
        self.start_fleet(create_latency=0.2)
        database = os.path.join(self.env.state_path, 'fleetflow.sqlite')
        wait_for(lambda: os.path.exists(database + '.launcher.lock.holder'))
        with open(database + '.launcher.lock.holder') as f:
            self.assertEqual('%s pid %d' % (socket.gethostname(),
                                            self.launcher.proc.pid),
                             f.read())


class TestOneLauncherPostgres(OneLauncherTests,
                              test_launcher.LauncherTestCase):

    def db_url(self):
        if not hasattr(self, '_db_url'):
            self._db_url = db_urls.postgres_url(self)
        return self._db_url

    def end_lock_connection(self):
        """End the launcher lock's connection, as a server restart does."""
        engine = sa.create_engine(self.db_url(), poolclass=sa.pool.NullPool)
        self.addCleanup(engine.dispose)
        with engine.connect() as conn:
            ended = conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :holder"), {
                    'holder': 'fleetflow-launcher %s pid %d' % (
                        socket.gethostname(), self.launcher.proc.pid)}).all()
        self.assertEqual(1, len(ended))
        return engine

    def test_a_lost_lock_connection_is_taken_again(self):
        self.start_fleet(create_latency=0.2)
        wait_for(lambda: 'Launcher test-host started'
                 in self.launcher.read_log())
        self.end_lock_connection()
        wait_for(lambda: 'lock is held again' in self.launcher.read_log(),
                 timeout=30, message='the lock was not taken again')
        second = self.start_launcher('launcher-2')
        self.assertEqual(1, second.proc.wait(60))
        request = self.client.create_request(['small'])
        done = self.client.wait_for_request(request['id'], timeout=60)
        self.assertEqual('fulfilled', done['state'], done)

    def test_a_launcher_whose_lock_was_taken_exits(self):
        self.start_fleet(create_latency=0.2)
        wait_for(lambda: 'Launcher test-host started'
                 in self.launcher.read_log())
        engine = self.end_lock_connection()
        # Another process takes the lock before the launcher looks again.
        other = engine.connect()
        self.addCleanup(other.close)
        self.assertTrue(other.execute(sa.text(
            "SELECT pg_try_advisory_lock(hashtext('fleetflow-launcher'), "
            "hashtext(current_schema()))")).scalar())
        self.assertEqual(1, self.launcher.proc.wait(60))
        self.assertIn('Launcher test-host stops its flows and passes: '
                      'another launcher runs the flows of this database',
                      self.launcher.read_log())
