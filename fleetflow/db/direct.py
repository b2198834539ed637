"""Statements compiled once and run on the DBAPI connection.

SQLAlchemy compiles a Core statement once and caches it, but each
execution still checks a ``Connection`` out of the pool, builds an
execution context, fires events and walks the parameters through the
dialect. For the one-row statements a flow makes at every step, that
cost about twice what the database itself spent.

Here SQLAlchemy still writes the SQL, for the engine's dialect, and still
converts the values (its types' bind and result processors), once per
statement shape; a transaction then runs the compiled SQL on a DBAPI
connection from the engine's pool, and counts what it did.
"""

import contextlib
import os
import threading

from sqlalchemy import exc as sa_exc


class Compiled:
    """One statement, compiled for a dialect, with its value converters."""

    def __init__(self, statement, dialect, columns=None):
        compiled = statement.compile(dialect=dialect, column_keys=columns)
        self.sql = compiled.string
        #: bind names in order, for positional paramstyles; else None
        self._positions = compiled.positiontup
        # Column defaults that SQLAlchemy computes in Python (a created or
        # updated time), for the columns the values do not name.
        self._defaults = [
            (column.key, column.default) for column in compiled.insert_prefetch
        ] + [(column.key, column.onupdate)
             for column in compiled.update_prefetch]
        self._converters = [
            (name, converter) for name, converter in (
                (name, bind.type.dialect_impl(dialect).bind_processor(
                    dialect))
                for name, bind in compiled.binds.items())
            if converter is not None]
        self._dialect = dialect
        self._selected = None
        self._readers = None
        if getattr(statement, 'is_select', False):
            self._selected = [(column.key, column.type.dialect_impl(dialect))
                              for column in statement.selected_columns]

    def parameters(self, values):
        """The DBAPI parameters for ``values``, a dict by bind name."""
        if self._converters or self._defaults:
            values = dict(values)
            for name, default in self._defaults:
                if name not in values:
                    values[name] = (default.arg(None) if default.is_callable
                                    else default.arg)
            for name, converter in self._converters:
                values[name] = converter(values[name])
        if self._positions is None:
            return values
        return [values[name] for name in self._positions]

    def rows(self, cursor):
        """The rows ``cursor`` fetches, as dicts by column key."""
        if self._readers is None:
            # A column's converter may depend on the type the DBAPI
            # reports for it (PostgreSQL's numbers do).
            self._readers = [
                (key, impl.result_processor(self._dialect, description[1]))
                for (key, impl), description in zip(self._selected,
                                                    cursor.description)]
        readers = self._readers
        return [{key: value if read is None or value is None else read(value)
                 for (key, read), value in zip(readers, raw)}
                for raw in cursor.fetchall()]


class Database:
    """Compiled statements of one engine, and transactions to run them.

    ``statement(key, build, columns)`` returns the compiled form of
    ``build()``, built once per ``key``: the key names the statement's
    shape (which table, which columns), its values are given when it
    runs. ``columns`` are those an INSERT or UPDATE without values of its
    own sets.
    ``commits`` and ``statements`` count what its transactions did.
    """

    def __init__(self, engine):
        self.engine = engine
        self.commits = 0
        self.statements = 0
        self._compiled = {}
        self._lock = threading.Lock()
        # SQLite runs one transaction at a time, on the engine's one
        # connection (fleetflow.db.api.create_engine). The flows' threads
        # queue here, on a plain lock, rather than in the pool's queue,
        # whose condition variable cost more CPU than the transactions
        # (16 threads: 55 against 33 us of CPU a transaction).
        self._turn = threading.Lock() \
            if engine.url.get_backend_name() == 'sqlite' \
            else contextlib.nullcontext()

    def statement(self, key, build, columns=None):
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = Compiled(build(), self.engine.dialect, columns)
            with self._lock:
                compiled = self._compiled.setdefault(key, compiled)
        return compiled

    def insert(self, tx, table, rows):
        """INSERT ``rows`` (dicts of the same columns) into ``table``."""
        columns = tuple(sorted(rows[0]))
        tx.executemany(self.statement(('insert', table.name, columns),
                                      table.insert, columns), rows)

    @contextlib.contextmanager
    def begin(self):
        """A transaction, committed when the block ends without error.

        One that only read is not committed (nor counted): the pool
        rolls it back when it takes the connection back. The DBAPI's
        errors are raised as SQLAlchemy's (``sqlalchemy.exc.DBAPIError``
        and its kinds), as the engine would raise them. A connection that
        broke is found by the pool's ping when it is next taken
        (``pool_pre_ping``, :func:`fleetflow.db.api.create_engine`).
        """
        error_class = self.engine.dialect.loaded_dbapi.Error
        with self._turn:
            try:
                connection = self.engine.raw_connection()
            except error_class as error:
                raise sa_exc.DBAPIError.instance(
                    None, None, error, error_class) from error
            transaction = Transaction(connection.cursor())
            try:
                try:
                    yield transaction
                    if transaction.writes:
                        connection.commit()
                except BaseException:
                    connection.rollback()
                    raise
                finally:
                    transaction.cursor.close()
            except error_class as error:
                raise sa_exc.DBAPIError.instance(
                    transaction.sql, None, error, error_class) from error
            finally:
                connection.close()
        with self._lock:
            self.commits += bool(transaction.writes)
            self.statements += transaction.statements


class Transaction:
    """Runs compiled statements on one DBAPI cursor."""

    def __init__(self, cursor):
        self.cursor = cursor
        self.statements = 0
        self.writes = False
        #: the SQL last run, for errors
        self.sql = None

    def execute(self, compiled, values):
        """Run ``compiled`` with ``values``; return the rows it changed."""
        self._run(compiled, values)
        self.writes = True
        return self.cursor.rowcount

    def executemany(self, compiled, rows):
        self.statements += 1
        self.writes = True
        self.sql = compiled.sql
        self.cursor.executemany(compiled.sql,
                                [compiled.parameters(row) for row in rows])

    def rows(self, compiled, values):
        """The rows a SELECT returns, as dicts by column key."""
        self._run(compiled, values)
        return compiled.rows(self.cursor)

    def _run(self, compiled, values):
        self.statements += 1
        self.sql = compiled.sql
        self.cursor.execute(compiled.sql, compiled.parameters(values))


class ChangeProbe:
    """Tells, without a query, whether a SQLite database may have changed.

    Every commit to a SQLite database in WAL mode (as
    :func:`fleetflow.db.api.create_engine` sets it) writes its ``-wal``
    file, and a checkpoint writes the main file: a stat of both shows any
    commit, from any process. On other databases (and in-memory SQLite)
    only a query can tell: :attr:`visible` is False and :meth:`changed`
    always says yes.
    """

    def __init__(self, engine):
        url = engine.url
        path = url.database if url.get_backend_name() == 'sqlite' else None
        self.visible = bool(path) and path != ':memory:' \
            and not path.startswith('file:')
        self._paths = (path, path + '-wal') if self.visible else ()
        self._last = None

    def changed(self):
        """Whether anything may have been committed since the last call."""
        if not self.visible:
            return True
        signature = tuple(_file_signature(path) for path in self._paths)
        changed = signature != self._last
        self._last = signature
        return changed


def _file_signature(path):
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
