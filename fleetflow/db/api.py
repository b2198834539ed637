"""The node store: nodes and node requests in the SQL database.

Rows are returned as plain dicts. Every state change is compare-and-set:
the UPDATE names the states the row may be in, so of two workers racing
for one node only one wins and the other gets :class:`NodeStateConflict`.
"""

import contextlib
import fcntl
import os
import threading
import time
import uuid

import sqlalchemy as sa
from sqlalchemy import event

from fleetflow.db import direct
from fleetflow.db import models
from fleetflow import exceptions
from fleetflow import node_states

NODES = models.Node.__table__
REQUESTS = models.NodeRequest.__table__


#: the priorities a request may have, lowest and highest
PRIORITY_RANGE = (0, 1000000)


def request_problem(labels, priority, max_nodes):
    """Why a request of ``labels`` at ``priority`` is not valid, or None.

    :param max_nodes: the most labels (nodes) a request may have.
    """
    if isinstance(labels, (str, bytes)):
        return ('labels must be a list of label names, not the string %r'
                % (labels,))
    if not isinstance(labels, (list, tuple)) or not labels:
        return 'a request needs at least one label'
    if len(labels) > max_nodes:
        return ('a request may ask for at most %d nodes ([requests] '
                'max_nodes), not %d' % (max_nodes, len(labels)))
    bad = [label for label in labels
           if not isinstance(label, str) or not label.strip()]
    if bad:
        return 'label names must be non-empty strings: %r' % (bad[:5],)
    low, high = PRIORITY_RANGE
    if isinstance(priority, bool) or not isinstance(priority, int) or \
            not low <= priority <= high:
        return ('priority must be an integer from %d to %d, not %r'
                % (low, high, priority))
    return None


def _sqlite_file(url):
    """The path of a SQLite URL's database file (None: in memory)."""
    path = sa.engine.make_url(url).database
    if not path or path == ':memory:' or path.startswith('file:'):
        return None
    return path


def _private_sqlite_file(path):
    """Create a SQLite database file 0600, if its directory exists.

    SQLite would create it with the umask's mode; its journal files take
    the database file's mode. An existing file is never opened here:
    closing any descriptor of a database file drops the POSIX locks that
    this process's SQLite connections hold on it.
    """
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except (FileExistsError, FileNotFoundError):
        pass  # there already; or no directory, which connecting reports


def create_engine(url, pool_size=10, busy_timeout=30):
    """Create an engine tuned for many short transactions from threads."""
    kwargs = {}
    if url.startswith('sqlite'):
        path = _sqlite_file(url)
        if path:
            _private_sqlite_file(path)
        # SQLite has one writer at a time, and a writer that finds the file
        # locked sleeps in growing steps. One connection, handed out in
        # turn by the pool, makes threads queue without sleeping.
        kwargs['connect_args'] = {'check_same_thread': False,
                                  'timeout': busy_timeout}
        kwargs.update(pool_size=1, max_overflow=0,
                      pool_timeout=busy_timeout)
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size,
                      pool_pre_ping=True)
    engine = sa.create_engine(url, **kwargs)
    if url.startswith('sqlite'):
        @event.listens_for(engine, 'connect')
        def _sqlite_pragmas(dbapi_conn, _record):
            cursor = dbapi_conn.cursor()
            cursor.execute('PRAGMA journal_mode=WAL')
            cursor.execute('PRAGMA synchronous=NORMAL')
            cursor.execute('PRAGMA busy_timeout=%d' % (busy_timeout * 1000))
            cursor.close()
        if path:
            _take_turns(engine, path)
    return engine


def _take_turns(engine, path):
    """Have this engine's connection take turns with other processes'.

    A writer that finds a SQLite file locked sleeps in growing steps; the
    processes of one launcher (its flow processes) queue instead on a
    lock file beside the database, held while a connection is checked
    out of an engine's pool. Each connection has its own descriptor of
    the lock file, closed with it.
    """
    @event.listens_for(engine, 'connect')
    def _open(dbapi_conn, record):
        record.info['turn'] = os.open(path + '.turn',
                                      os.O_RDWR | os.O_CREAT, 0o600)

    @event.listens_for(engine, 'close')
    def _close(dbapi_conn, record):
        turn = record.info.pop('turn', None)
        if turn is not None:
            os.close(turn)

    @event.listens_for(engine, 'checkout')
    def _take(dbapi_conn, record, proxy):
        fcntl.flock(record.info['turn'], fcntl.LOCK_EX)

    @event.listens_for(engine, 'checkin')
    def _give(dbapi_conn, record):
        fcntl.flock(record.info['turn'], fcntl.LOCK_UN)


def _state_in(table, count):
    """The row's state is one of ``count`` values, ``:state_0``..."""
    if not count:
        return sa.false()
    return table.c.state.in_([sa.bindparam('state_%d' % index)
                              for index in range(count)])


def _states(states):
    """The values of :func:`_state_in`'s parameters."""
    return {'state_%d' % index: state for index, state in enumerate(states)}


def _by_id(table, columns=None, expected=None, unheld=False):
    """An UPDATE (of ``columns``), or a DELETE, of the row ``:key``.

    With ``expected`` (a count), only while the row's state is one of as
    many values (:func:`_state_in`): a compare-and-set; with ``unheld``,
    only while no request holds the node.
    """
    statement = (table.delete() if columns is None else table.update())
    statement = statement.where(table.c.id == sa.bindparam('key'))
    if expected is not None:
        statement = statement.where(_state_in(table, expected))
    if unheld:
        statement = statement.where(table.c.request_id.is_(None))
    return statement


def _taking(count):
    """An UPDATE of ``count`` nodes (``:id_0``...) held by ``:request``.

    Only those still in the state ``:state_0`` change.
    """
    return (NODES.update()
            .where(NODES.c.id.in_([sa.bindparam('id_%d' % index)
                                   for index in range(count)]))
            .where(_state_in(NODES, 1))
            .where(NODES.c.request_id == sa.bindparam('request')))


#: the order rows are listed in, by table
_ORDER = {NODES: (NODES.c.created_at,),
          REQUESTS: (REQUESTS.c.priority, REQUESTS.c.created_at)}


def _listing(table, states, columns):
    """The SELECT of :meth:`Store._list`."""
    query = table.select().order_by(*_ORDER[table])
    if states is not None:
        query = query.where(_state_in(table, states))
    for column in columns:
        query = query.where(table.c[column] == sa.bindparam('is_' + column))
    return query


class Store:
    """Node and request rows, on one SQLAlchemy engine.

    The statements a flow makes for its node at each step (read it,
    change its state or fields, delete it), and the listings a pass
    reads, run on :attr:`db` (:mod:`fleetflow.db.direct`); the rest
    (serving requests, releasing them) are plain SQLAlchemy.
    ``transactions`` counts the transactions committed on the engine,
    ``statements`` the statements run, both ways.
    """

    def __init__(self, engine):
        self.engine = engine
        self.db = direct.Database(engine)
        self._commits = self._statements = 0
        self._count_lock = threading.Lock()
        event.listen(engine, 'commit', self._count_commit)
        event.listen(engine, 'before_cursor_execute', self._count_statement)

    @property
    def transactions(self):
        return self._commits + self.db.commits

    @property
    def statements(self):
        return self._statements + self.db.statements

    def _count_commit(self, _conn):
        with self._count_lock:
            self._commits += 1

    def _count_statement(self, *_args):
        with self._count_lock:
            self._statements += 1

    def _write(self, statement):
        with self.engine.begin() as conn:
            return conn.execute(statement)

    def _transaction(self, tx=None):
        """``tx`` (a direct transaction) if given, else a new one."""
        return contextlib.nullcontext(tx) if tx is not None \
            else self.db.begin()

    def _change(self, table, row_id, values, expected=None, unheld=False,
                tx=None):
        """Change one row's ``values``; return whether it changed.

        With ``expected``, only a row in one of those states changes; with
        ``unheld``, only a node no request holds. The UPDATE runs in
        ``tx`` if given. A node's state changes only as
        :mod:`fleetflow.node_states` allows: without ``expected``, from
        the states it may move to the new one from.

        :raises IllegalTransition: for a move the table does not allow.
        """
        if table is NODES and 'state' in values:
            if expected is None:
                expected = node_states.sources(values['state'])
            node_states.check(expected, values['state'])
        columns = sorted(values)
        count = None if expected is None else len(expected)
        statement = self.db.statement(
            ('change', table.name, tuple(columns), count, unheld),
            lambda: _by_id(table, columns, count, unheld), columns)
        values = dict(values, key=row_id, **_states(expected or ()))
        with self._transaction(tx) as tx:
            return tx.execute(statement, values) == 1

    def _change_spare(self, node_id, values, tx=None):
        """Change a node while it is ready and no request's."""
        return self._change(NODES, node_id, values, [node_states.READY],
                            unheld=True, tx=tx)

    def _row(self, table, row_id):
        rows = self._list(table, id=row_id)
        return rows[0] if rows else None

    def _list(self, table, states=None, tx=None, **equal):
        """Rows of ``table`` in its order, those in one of ``states``.

        Each of ``equal`` that is not None keeps only the rows where that
        column is equal to it. The SELECT runs in ``tx`` if given.
        """
        columns = tuple(sorted(k for k, v in equal.items() if v is not None))
        count = None if states is None else len(states)
        statement = self.db.statement(
            ('list', table.name, count, columns),
            lambda: _listing(table, count, columns))
        values = _states(states or ())
        values.update(('is_' + column, equal[column]) for column in columns)
        with self._transaction(tx) as tx:
            return tx.rows(statement, values)

    # Nodes

    @staticmethod
    def _node_row(label, provider, pool, now, state=node_states.BUILDING,
                  **fields):
        values = dict(id=str(uuid.uuid4()), label=label, provider=provider,
                      pool=pool, state=state, created_at=now, state_time=now,
                      host_keys=[], launch_attempts=0,
                      connection_type='ssh', connection_port=22)
        values.update(fields)
        return values

    def create_node(self, label, provider, pool, state=node_states.BUILDING,
                    **fields):
        values = self._node_row(label, provider, pool, time.time(), state,
                                **fields)
        self._write(NODES.insert().values(**values))
        return values

    def get_node(self, node_id):
        node = self._row(NODES, node_id)
        if node is None:
            raise exceptions.FleetflowError('node %s not found' % node_id)
        return node

    def find_node(self, node_id):
        return self._row(NODES, node_id)

    def list_nodes(self, states=None, provider=None, label=None,
                   request_id=None, pool=None):
        return self._list(NODES, states, provider=provider, label=label,
                          request_id=request_id, pool=pool)

    def count_nodes(self):
        """Rows of (provider, pool, label, state, count), one query."""
        query = (sa.select(NODES.c.provider, NODES.c.pool, NODES.c.label,
                           NODES.c.state, sa.func.count())
                 .group_by(NODES.c.provider, NODES.c.pool, NODES.c.label,
                           NODES.c.state))
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(query)]

    def update_node(self, node_id, tx=None, expected=None, **fields):
        """Change a node's fields; in ``tx`` if given.

        :param expected: states the node must be in to change.
        :returns: whether the node changed.
        """
        return self._change(NODES, node_id, fields, expected, tx=tx)

    def set_node_state(self, node_id, state, expected=None, **fields):
        """Move a node to ``state`` if it is in one of ``expected``.

        Without ``expected``, from any state :mod:`fleetflow.node_states`
        allows it to move to ``state`` from.

        :raises NodeStateConflict: when the node is in another state or gone.
        :raises IllegalTransition: for a move the table does not allow.
        """
        now = time.time()
        values = dict(state=state, state_time=now, **fields)
        if state == node_states.READY:
            values.setdefault('ready_at', now)
        if not self._change(NODES, node_id, values, expected):
            raise exceptions.NodeStateConflict(
                'node %s is not %s' % (node_id, ' or '.join(
                    sorted(expected or node_states.sources(state)))))

    def assign_node(self, node_id, request_id):
        """Give a ready, unassigned node to a request (compare-and-set)."""
        return self._change_spare(node_id, dict(request_id=request_id))

    def serve_requests(self, plans):
        """Serve requests in one transaction.

        Each plan names a ``request_id``, the ``provider``, ``pool`` and
        ``launcher`` serving it, the ready spare node ids to ``reuse`` and
        the labels to ``launch``. A request that is no longer requested is
        skipped (None); a spare taken meanwhile is launched instead.

        :returns: per plan, the new building node rows, or None.
        """
        now = time.time()
        results = []
        with self.db.begin() as tx:
            for plan in plans:
                if not self._change(
                        REQUESTS, plan['request_id'],
                        dict(state=models.PENDING, state_time=now,
                             provider=plan['provider'], pool=plan['pool'],
                             launcher=plan['launcher'], reason=None),
                        [models.REQUESTED], tx=tx):
                    results.append(None)
                    continue
                launch = list(plan['launch'])
                for node_id in plan['reuse']:
                    if not self._change_spare(
                            node_id, dict(request_id=plan['request_id']),
                            tx=tx):
                        launch.append(
                            self._list(NODES, id=node_id, tx=tx)[0]['label'])
                nodes = [self._node_row(label, plan['provider'], plan['pool'],
                                        now, request_id=plan['request_id'],
                                        launcher=plan['launcher'])
                         for label in launch]
                if nodes:
                    self.db.insert(tx, NODES, nodes)
                results.append(nodes)
        return results

    def fulfil_request(self, request_id, node_ids):
        """Ready nodes go in-use and their request is fulfilled, at once.

        :returns: whether it happened (every node was still ready).
        """
        statement = self.db.statement(
            ('take', len(node_ids)), lambda: _taking(len(node_ids)),
            ['state', 'state_time'])
        node_states.check([node_states.READY], node_states.IN_USE)
        values = dict(_states([node_states.READY]), request=request_id,
                      state=node_states.IN_USE, state_time=time.time())
        values.update(('id_%d' % index, node_id)
                      for index, node_id in enumerate(node_ids))
        try:
            with self.db.begin() as tx:
                if (tx.execute(statement, values) != len(node_ids)
                        or not self._change(
                            REQUESTS, request_id,
                            dict(state=models.FULFILLED,
                                 state_time=values['state_time']),
                            [models.PENDING], tx=tx)):
                    raise exceptions.NodeStateConflict(request_id)
        except exceptions.NodeStateConflict:
            return False
        return True

    def retire_spare(self, node_id):
        """Mark a ready node that no request holds as used (compare-and-set).

        :returns: whether it was still a spare.
        """
        return self._change_spare(
            node_id, dict(state=node_states.USED, state_time=time.time()))

    def detach_nodes(self, request_id):
        """Take a request's nodes away from it (they stay as they are)."""
        self._write(NODES.update().where(NODES.c.request_id == request_id)
                    .values(request_id=None))

    def delete_node(self, node_id):
        statement = self.db.statement(('delete', NODES.name),
                                      lambda: _by_id(NODES))
        with self.db.begin() as tx:
            tx.execute(statement, {'key': node_id})

    # Requests

    def create_request(self, labels, priority=100, requestor=None,
                       zk_request=None):
        """A new request; ``zk_request``: the NodeRequest znode it serves."""
        if not labels:
            raise exceptions.FleetflowError('a request needs labels')
        now = time.time()
        values = dict(id=str(uuid.uuid4()), state=models.REQUESTED,
                      labels=list(labels), priority=priority,
                      requestor=requestor, created_at=now, state_time=now,
                      zk_request=zk_request)
        self._write(REQUESTS.insert().values(**values))
        return values

    def zk_requests(self):
        """The requests that serve a ZooKeeper NodeRequest."""
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(
                REQUESTS.select().where(REQUESTS.c.zk_request.isnot(None)))]

    def delete_request(self, request_id):
        """Forget a request row; its nodes are left as they are."""
        self._write(REQUESTS.delete().where(REQUESTS.c.id == request_id))

    def get_request(self, request_id):
        request = self._row(REQUESTS, request_id)
        if request is None:
            raise exceptions.FleetflowError(
                'request %s not found' % request_id)
        return request

    def list_requests(self, states=None):
        return self._list(REQUESTS, states)

    def set_request_state(self, request_id, state, expected=None, **fields):
        values = dict(state=state, state_time=time.time(), **fields)
        if not self._change(REQUESTS, request_id, values, expected):
            raise exceptions.NodeStateConflict(
                'request %s is not in state %s' % (request_id, expected))

    def release_request(self, request_id):
        """Hand a request's nodes back (they become used) and forget it."""
        now = time.time()
        node_states.check(node_states.RELEASABLE, node_states.USED)
        with self.engine.begin() as conn:
            conn.execute(NODES.update()
                         .where(NODES.c.request_id == request_id)
                         .where(NODES.c.state.in_(
                             sorted(node_states.RELEASABLE)))
                         .values(state=node_states.USED, state_time=now))
            conn.execute(NODES.update()
                         .where(NODES.c.request_id == request_id)
                         .values(request_id=None))
            deleted = conn.execute(REQUESTS.delete()
                                   .where(REQUESTS.c.id == request_id))
        if deleted.rowcount != 1:
            raise exceptions.FleetflowError(
                'request %s not found' % request_id)

    def request_marker(self):
        """A cheap value that changes when requests need a launcher pass.

        It changes when a request is added or released, and when one is
        requested again or fails; not when one is served or fulfilled,
        which is done by a launcher that already knows.
        """
        statement = self.db.statement(('marker',), lambda: sa.select(
            sa.func.max(sa.case((_state_in(REQUESTS, 2), None),
                                else_=REQUESTS.c.state_time))
            .label('changed'), sa.func.count().label('requests')))
        with self.db.begin() as tx:
            [row] = tx.rows(statement, _states(
                (models.PENDING, models.FULFILLED)))
        return row['changed'], row['requests']
