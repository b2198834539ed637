"""A lock that launchers on several hosts take in turn.

The launchers of one fleet share its database. What one of them decides
in a pass (which requests to serve, how many nodes to launch for
min-ready, whether quota is left) depends on every node of every
launcher, so passes take turns: a pass holds :class:`PassLock` from the
moment it reads the nodes until it has written what it decided.

- PostgreSQL (and MySQL): the lock is the row of ``fleetflow_locks``
  named after it, locked with ``SELECT ... FOR UPDATE`` in a transaction
  of its own that lasts as long as the pass. A launcher that dies loses
  its connection, and the server ends the transaction and frees the row.
  On PostgreSQL the lock's connection asks the server for TCP keepalives,
  so that a host that vanished from the network is noticed too, and a
  waiter gives up after ``timeout`` (``lock_timeout``).
- SQLite: one writer at a time, on one machine: the pass's own writes
  could not go on beside a ``BEGIN IMMEDIATE`` transaction on another
  connection, so the lock is a file lock next to the database file (an
  in-memory database: a lock of the process).
"""

import contextlib
import logging
import os
import socket
import threading

import fasteners
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from fleetflow.db import models
from fleetflow import exceptions

LOG = logging.getLogger(__name__)

LOCKS = models.Lock.__table__

#: The lock that serializes launcher passes.
PASS = 'launcher-pass'

# File locks exclude other processes only: the threads of this process
# share one lock per file.
_LOCAL = {}
_LOCAL_LOCK = threading.Lock()


def _local_lock(key):
    with _LOCAL_LOCK:
        return _LOCAL.setdefault(key, threading.Lock())


class LockTimeout(exceptions.FleetflowError):
    """The lock was not free within the timeout."""


class PassLock:
    """A named lock shared by every process on one database.

    :param engine: the SQLAlchemy engine of the fleet's database.
    :param name: the lock's row in ``fleetflow_locks``.
    :param timeout: seconds a caller waits for the lock before
        :class:`LockTimeout`.
    :param keepalive: seconds of silence after which the PostgreSQL server
        probes the lock holder's connection (it is dropped, and the lock
        freed, after three unanswered probes that far apart).
    """

    def __init__(self, engine, name=PASS, timeout=30.0, keepalive=10):
        self.engine = engine
        self.name = name
        self.timeout = timeout
        self.keepalive = max(1, int(keepalive))
        self.dialect = engine.dialect.name
        self._file_lock = None
        self._thread_lock = threading.Lock()
        if self.dialect == 'sqlite':
            database = engine.url.database
            if database and database != ':memory:' and \
                    not database.startswith('file::memory:'):
                path = '%s.%s.lock' % (os.path.abspath(database), name)
                self._file_lock = fasteners.InterProcessLock(path)
                self._thread_lock = _local_lock(path)

    @contextlib.contextmanager
    def hold(self):
        """Hold the lock for the ``with`` block.

        :raises LockTimeout: when it was not free within ``timeout``.
        """
        if self.dialect == 'sqlite':
            with self._hold_local():
                yield
        else:
            with self._hold_row():
                yield

    @contextlib.contextmanager
    def _hold_local(self):
        if not self._thread_lock.acquire(timeout=self.timeout):
            raise LockTimeout('lock %s: busy for %ss' % (self.name,
                                                         self.timeout))
        try:
            if self._file_lock is not None and \
                    not self._file_lock.acquire(timeout=self.timeout):
                raise LockTimeout('lock %s: busy for %ss'
                                  % (self.name, self.timeout))
            try:
                yield
            finally:
                if self._file_lock is not None:
                    self._file_lock.release()
        finally:
            self._thread_lock.release()

    @contextlib.contextmanager
    def _hold_row(self):
        # One holder per process at a time: threads of one process queue
        # here instead of each holding a connection while they wait.
        if not self._thread_lock.acquire(timeout=self.timeout):
            raise LockTimeout('lock %s: busy for %ss' % (self.name,
                                                         self.timeout))
        try:
            with self.engine.connect() as conn:
                with conn.begin():
                    self._lock_row(conn)
                    yield
        finally:
            self._thread_lock.release()

    def _lock_row(self, conn):
        if self.dialect == 'postgresql':
            for setting, value in (
                    ('lock_timeout', '%dms' % (self.timeout * 1000)),
                    ('tcp_keepalives_idle', self.keepalive),
                    ('tcp_keepalives_interval', self.keepalive),
                    ('tcp_keepalives_count', 3)):
                conn.execute(sa.text("SELECT set_config(:name, :value, "
                                     "true)"),
                             {'name': setting, 'value': str(value)})
        query = (sa.select(LOCKS.c.name).where(LOCKS.c.name == self.name)
                 .with_for_update())
        for _ in range(2):
            try:
                if conn.execute(query).first() is not None:
                    return
            except sa_exc.OperationalError as e:
                if _is_lock_timeout(e):
                    raise LockTimeout('lock %s: busy for %ss'
                                      % (self.name, self.timeout)) from e
                raise
            self._create_row()
        raise exceptions.FleetflowError('lock row %s cannot be created'
                                        % self.name)

    def _create_row(self):
        """Add the lock's row (migrations add the pass lock's)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(LOCKS.insert().values(name=self.name))
        except sa_exc.IntegrityError:
            pass


def _is_lock_timeout(error):
    code = getattr(getattr(error, 'orig', None), 'pgcode', None)
    return code == '55P03' or 'lock timeout' in str(error).lower()


class LockHeld(exceptions.FleetflowError):
    """Another process holds the lock."""


class OwnerLock:
    """Held by one process for as long as it runs: the owner of a database.

    Without a jobboard, one launcher runs the flows of a database: a second
    one would resume the first one's flows beside it. The launcher takes
    this lock when it starts, and refuses to start when another process
    holds it, naming that process (host and pid). A holder that dies, even
    killed, frees the lock at once: nothing is left to expire.

    - SQLite: a file lock (fasteners) next to the database file, freed by
      the kernel when its holder's process ends; the holder writes its
      host and pid in a file beside it.
    - PostgreSQL: a session advisory lock, named after the schema, taken on
      a connection of its own (in autocommit: no transaction stays open),
      freed by the server when that connection ends; the holder's host and
      pid are the connection's ``application_name``. When that connection
      is lost (the server restarted), :meth:`check` takes the lock again,
      or says that another process took it meanwhile.
    - Other databases: not held (a warning says so).
    """

    def __init__(self, engine, name='launcher', keepalive=10):
        self.engine = engine
        self.name = name
        self.keepalive = max(1, int(keepalive))
        self.dialect = engine.dialect.name
        self.holder = '%s pid %d' % (socket.gethostname(), os.getpid())
        self._conn = None
        #: whether the lock was taken on PostgreSQL (and is to be kept)
        self._advisory = False
        self._file_lock = None
        self._thread_lock = None
        self._path = None
        if self.dialect == 'sqlite':
            database = engine.url.database
            if database and database != ':memory:' and \
                    not database.startswith('file::memory:'):
                self._path = '%s.%s.lock' % (os.path.abspath(database), name)

    def acquire(self):
        """Take the lock, or raise :class:`LockHeld` naming its holder."""
        if self.dialect == 'sqlite':
            if self._path is not None:
                self._acquire_file()
        elif self.dialect == 'postgresql':
            self._acquire_advisory()
        else:
            LOG.warning('Database %s: no lock keeps a second launcher from '
                        'running its flows', self.dialect)

    def check(self):
        """Take the lock again if its PostgreSQL connection was lost.

        :raises LockHeld: when another process took it meanwhile.
        :raises sqlalchemy.exc.DBAPIError: when the server does not answer
            (asked again at the next check).
        """
        if not self._advisory:
            return
        if self._conn is not None:
            try:
                self._conn.execute(sa.text('SELECT 1'))
                return
            except sa_exc.DBAPIError:
                _drop(self._conn)
                self._conn = None
        LOG.warning('The %s lock\'s database connection was lost: taking '
                    'the lock again', self.name)
        self._acquire_advisory()
        LOG.warning('The %s lock is held again', self.name)

    def release(self):
        self._advisory = False
        if self._file_lock is not None:
            self._file_lock.release()
            self._thread_lock.release()
            self._file_lock = None
        if self._conn is not None:
            _drop(self._conn)
            self._conn = None

    def _acquire_file(self):
        # File locks exclude other processes only: this process's holders
        # share a thread lock.
        thread_lock = _local_lock(self._path)
        if not thread_lock.acquire(blocking=False):
            raise self._held(self._read_holder())
        file_lock = fasteners.InterProcessLock(self._path)
        if not file_lock.acquire(blocking=False):
            thread_lock.release()
            raise self._held(self._read_holder())
        self._file_lock, self._thread_lock = file_lock, thread_lock
        with open(self._path + '.holder', 'w') as f:
            f.write(self.holder)

    def _read_holder(self):
        try:
            with open(self._path + '.holder') as f:
                return f.read(200).strip() or None
        except OSError:
            return None

    def _acquire_advisory(self):
        conn = self.engine.connect().execution_options(
            isolation_level='AUTOCOMMIT')
        try:
            for setting, value in (
                    ('application_name', 'fleetflow-%s %s'
                     % (self.name, self.holder)),
                    ('tcp_keepalives_idle', self.keepalive),
                    ('tcp_keepalives_interval', self.keepalive),
                    ('tcp_keepalives_count', 3)):
                conn.execute(sa.text('SELECT set_config(:name, :value, '
                                     'false)'),
                             {'name': setting, 'value': str(value)[:63]})
            key = {'lock': 'fleetflow-%s' % self.name}
            if conn.execute(sa.text(
                    'SELECT pg_try_advisory_lock(hashtext(:lock), '
                    'hashtext(current_schema()))'), key).scalar():
                self._conn = conn
                self._advisory = True
                return
            holder = conn.execute(sa.text(
                "SELECT a.application_name, a.client_addr FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted "
                "AND l.objsubid = 2 AND l.database = (SELECT oid FROM "
                "pg_database WHERE datname = current_database()) "
                "AND l.classid = hashtext(:lock)::oid "
                "AND l.objid = hashtext(current_schema())::oid"),
                key).first()
        except Exception:
            _drop(conn)
            raise
        _drop(conn)
        raise self._held(None if holder is None else '%s (from %s)' % (
            holder[0].replace('fleetflow-%s ' % self.name, '', 1),
            holder[1] or 'a local socket'))

    def _held(self, holder):
        return LockHeld(
            'another %s runs the flows of this database: %s; without a '
            'jobboard only one may (stop it, or enable [jobboard])'
            % (self.name, holder or 'its host and pid are unknown'))


def _drop(conn):
    """Close a connection and its session: the pool must not keep it."""
    with contextlib.suppress(Exception):
        conn.invalidate()
        conn.close()
