"""Flow persistence: TaskFlow logbooks in fleetflow's SQL database.

Persistence is paid on every task transition of every node, so the backend
here keeps TaskFlow's tables and semantics but not its stock costs:

- TaskFlow's SQLAlchemy backend builds a new ``MetaData`` and new table
  objects for every connection it hands out, and the engine asks for a
  connection on every save; new table objects defeat SQLAlchemy's compiled
  statement cache. Here one connection object serves the backend's whole
  life (it borrows a DBAPI connection from fleetflow's pooled engine for
  each call).
- Saving an atom read the row back and merged it before writing it; saving
  a flow detail rewrote every atom of the flow. Here an atom save is one
  UPDATE, and a flow save writes the flow row and inserts only the atoms
  that are new.
- A save that changes nothing but an atom's ``meta`` (task progress and
  timings, which a resumed flow does not need), or that only marks it
  RUNNING, is not written at once: it is written with the atom's next real
  change, or when the flow finishes. A flow resumed after a crash runs a
  task again whether it was recorded PENDING or RUNNING, and fleetflow's
  tasks are idempotent, so nothing is lost.
- Saving a logbook read back and merged every flow and atom in it. Here it
  writes the logbook row and inserts the flow details that are new; and
  :meth:`LeanConnection.add_flow` records a new flow with all its atoms in
  one transaction, the logbook read nowhere.
- A flow's row is written when the flow ends or stops (it is parked, or
  its claim was lost), and when anything but its state changed; the states
  it passes through as it starts (resuming, running) are not. A restart
  resumes every flow that did not end, whatever its recorded state.
"""

import contextlib
import threading

import sqlalchemy as sa
from taskflow import exceptions as tf_exceptions
from taskflow.persistence.backends import impl_memory
from taskflow.persistence.backends import impl_sqlalchemy
from taskflow.persistence import models as tf_models
from taskflow import states

from fleetflow.execution import taskflow_overrides

FINISHED = (states.SUCCESS, states.REVERTED, states.FAILURE)


def _conf(engine):
    return {'connection': engine.url.render_as_string(hide_password=False)}


class LeanConnection(impl_sqlalchemy.Connection):
    """TaskFlow's SQL connection with fewer and cheaper writes.

    Its statements are compiled once for each shape (table and columns)
    and run on the DBAPI connection (:mod:`fleetflow.db.direct`).
    """

    def __init__(self, backend, upgrade_lock):
        super().__init__(backend, upgrade_lock)
        self._db = backend.database
        self._lock = threading.Lock()
        self._written = {}
        self._states = {}
        self._flow_atoms = {}
        tables = taskflow_overrides.tables(self)
        self._tables_by_name = {'logbooks': tables.logbooks,
                                'flows': tables.flowdetails,
                                'atoms': tables.atomdetails}
        self._atoms_of_flow = self._select_uuids(tables.atomdetails,
                                                 'parent_uuid')
        self._book = self._select_uuids(tables.logbooks, 'uuid')
        self._flows_of_book = self._select_uuids(tables.flowdetails,
                                                 'parent_uuid')
        self._destroy = [self._db.statement(('destroy', table.name), build)
                         for table, build in _destroy_book(tables)]
        self._remove_flow = [
            self._db.statement(('remove', table.name), build)
            for table, build in _remove_flow(tables)]

    def _select_uuids(self, table, column):
        return self._db.statement(
            ('uuids', table.name, column),
            lambda: sa.select(table.c.uuid).where(
                table.c[column] == sa.bindparam('key')))

    def _update(self, tx, table, values):
        return tx.execute(self._update_statement(table, values),
                          _by_uuid(values))

    def _update_statement(self, table, values):
        """The UPDATE of the columns ``values`` has, of the row ``:key``."""
        columns = sorted(values)
        return self._db.statement(
            ('update', table, tuple(columns)),
            lambda: self._tables_by_name[table].update().where(
                self._tables_by_name[table].c.uuid == sa.bindparam('key')),
            columns)

    def _insert(self, tx, table, rows):
        self._db.insert(tx, self._tables_by_name[table], rows)

    def update_atom_details(self, atom_detail):
        values = atom_detail.to_dict()
        with self._lock:
            last = self._written.get(atom_detail.uuid)
        if last is not None and _deferrable(last, values):
            return atom_detail
        with self._db.begin() as tx:
            if not self._update(tx, 'atoms', values):
                raise tf_exceptions.NotFound(
                    "No atom details found with uuid '%s'" % values['uuid'])
        with self._lock:
            self._written[values['uuid']] = values
        return atom_detail

    def save_logbook(self, book):
        with self._db.begin() as tx:
            values = book.to_dict()
            if not self._update(tx, 'logbooks', values):
                self._insert(tx, 'logbooks', [values])
            known = _uuids(tx, self._flows_of_book, book.uuid)
            for flow_detail in book:
                if flow_detail.uuid not in known:
                    self._insert_flow(tx, book.uuid, flow_detail)
        return book

    def destroy_logbook(self, book_uuid):
        """Delete a book with its flows and their atoms, at once.

        The rows are deleted one table after the other, not left to the
        foreign keys' cascade, which SQLite does not follow unless told.
        """
        with self._db.begin() as tx:
            for statement in self._destroy:
                deleted = tx.execute(statement, {'key': book_uuid})
            if not deleted:
                raise tf_exceptions.NotFound(
                    "No logbook found with uuid '%s'" % book_uuid)

    def add_flow(self, book, flow_detail, also=None, keep=None):
        """Save a new flow detail and its atoms in ``book``, at once.

        One transaction: the book's row is made if it has none, and
        ``also(tx)``, when given, runs in the same transaction
        (a :class:`fleetflow.db.direct.Transaction`). With ``keep``, the
        book's finished flows but the ``keep`` newest are removed, with
        their atoms: a node's logbook stays bounded however often its
        flows are run again.
        """
        with self._db.begin() as tx:
            if not _uuids(tx, self._book, book.uuid):
                self._insert(tx, 'logbooks', [book.to_dict()])
            elif keep is not None:
                self._prune(tx, book.uuid, keep)
            self._insert_flow(tx, book.uuid, flow_detail)
            if also is not None:
                also(tx)
        book.add(flow_detail)
        return book

    def _prune(self, tx, book_uuid, keep):
        flows = taskflow_overrides.tables(self).flowdetails
        finished = [row['uuid'] for row in tx.rows(self._db.statement(
            ('newest', flows.name),
            lambda: sa.select(flows.c.uuid, flows.c.state).where(
                flows.c.parent_uuid == sa.bindparam('key')).order_by(
                    flows.c.created_at.desc(), flows.c.uuid)),
            {'key': book_uuid}) if row['state'] in FINISHED]
        removed = [{'key': flow_uuid} for flow_uuid in finished[keep:]]
        if removed:
            for statement in self._remove_flow:
                tx.executemany(statement, removed)

    def _insert_flow(self, tx, book_uuid, flow_detail):
        values = flow_detail.to_dict()
        self._insert(tx, 'flows', [dict(values, parent_uuid=book_uuid)])
        self._add_atoms(tx, flow_detail, set())
        with self._lock:
            self._written[flow_detail.uuid] = values

    def update_flow_details(self, flow_detail):
        values = flow_detail.to_dict()
        finished = flow_detail.state in FINISHED
        with self._lock:
            last = self._written.get(flow_detail.uuid)
            before = self._states.get(flow_detail.uuid)
            self._states[flow_detail.uuid] = flow_detail.state
            known = self._flow_atoms.get(flow_detail.uuid)
        write_row = (last is None or not _only_state_changed(last, values)
                     or _lasting(before, flow_detail.state))
        new_atoms = known is None or any(
            atom_detail.uuid not in known for atom_detail in flow_detail)
        if not (write_row or new_atoms):
            return flow_detail
        with self._db.begin() as tx:
            if write_row:
                if not self._update(tx, 'flows', values):
                    raise tf_exceptions.NotFound(
                        "No flow details found with uuid '%s'"
                        % flow_detail.uuid)
                with self._lock:
                    self._written[flow_detail.uuid] = values
            if new_atoms:
                self._add_atoms(tx, flow_detail,
                                self._known_atoms(tx, flow_detail.uuid))
            if finished:
                unwritten = [values for values in (
                    atom_detail.to_dict() for atom_detail in flow_detail)
                    if values != self._written.get(values['uuid'])]
                if unwritten:
                    tx.executemany(
                        self._update_statement('atoms', unwritten[0]),
                        [_by_uuid(values) for values in unwritten])
        if finished:
            self._forget_flow(flow_detail)
        return flow_detail

    def _add_atoms(self, tx, flow_detail, known):
        new = [atom_detail for atom_detail in flow_detail
               if atom_detail.uuid not in known]
        if not new:
            return
        rows = [dict(atom_detail.to_dict(), parent_uuid=flow_detail.uuid,
                     atom_type=tf_models.atom_detail_type(atom_detail))
                for atom_detail in new]
        self._insert(tx, 'atoms', rows)
        with self._lock:
            known.update(atom_detail.uuid for atom_detail in new)
            self._flow_atoms[flow_detail.uuid] = known
            for row in rows:
                row.pop('parent_uuid')
                row.pop('atom_type')
                self._written[row['uuid']] = row

    def _known_atoms(self, tx, flow_uuid):
        with self._lock:
            known = self._flow_atoms.get(flow_uuid)
        if known is None:
            known = _uuids(tx, self._atoms_of_flow, flow_uuid)
            with self._lock:
                self._flow_atoms[flow_uuid] = known
        return known

    def forget_flow(self, flow_uuid):
        """Forget what this connection remembers of a flow's atoms.

        It remembers what it wrote, as if no other process wrote the
        flow; a process that hands the flow over to others (the jobboard)
        calls this when it posts the flow and when it takes it back.
        """
        with self._lock:
            self._written.pop(flow_uuid, None)
            self._states.pop(flow_uuid, None)
            for atom_uuid in self._flow_atoms.pop(flow_uuid, ()):
                self._written.pop(atom_uuid, None)

    def _forget_flow(self, flow_detail):
        with self._lock:
            self._flow_atoms.pop(flow_detail.uuid, None)
            self._written.pop(flow_detail.uuid, None)
            self._states.pop(flow_detail.uuid, None)
            for atom_detail in flow_detail:
                self._written.pop(atom_detail.uuid, None)


def _destroy_book(tables):
    """Per table, the DELETE of its rows of the book ``:key``."""
    key = sa.bindparam('key')
    atoms, flows, books = (tables.atomdetails, tables.flowdetails,
                           tables.logbooks)
    flows_of_book = (sa.select(flows.c.uuid)
                     .where(flows.c.parent_uuid == key).scalar_subquery())
    return [
        (atoms, lambda: atoms.delete().where(
            atoms.c.parent_uuid.in_(flows_of_book))),
        (flows, lambda: flows.delete().where(flows.c.parent_uuid == key)),
        (books, lambda: books.delete().where(books.c.uuid == key))]


def _remove_flow(tables):
    """Per table, the DELETE of the flow ``:key`` and of its atoms."""
    key = sa.bindparam('key')
    atoms, flows = tables.atomdetails, tables.flowdetails
    return [(atoms, lambda: atoms.delete().where(atoms.c.parent_uuid == key)),
            (flows, lambda: flows.delete().where(flows.c.uuid == key))]


def _by_uuid(values):
    """The parameters of an UPDATE of ``values``'s row (by its uuid)."""
    return dict(values, key=values['uuid'])


def _uuids(tx, select, key):
    return {row['uuid'] for row in tx.rows(select, {'key': key})}


def _lasting(before, state):
    """Whether a flow's move from ``before`` to ``state`` is written.

    It is when the flow ended, or stopped (the runner parked it, or its
    claim was lost); not when it merely starts: resuming, then suspended
    until it runs, then running.
    """
    return state in FINISHED or (
        state == states.SUSPENDED and before != states.RESUMING)


def _only_state_changed(last, values):
    return all(last.get(key) == value for key, value in values.items()
               if key != 'state')


def _deferrable(last, values):
    """Whether a save only changes meta, or only marks the atom RUNNING."""
    running = values.get('state') == states.RUNNING
    return all(last.get(key) == value for key, value in values.items()
               if key != 'meta' and not (running and key == 'state'))


class SharedConnectionBackend(impl_sqlalchemy.SQLAlchemyBackend):
    """SQLAlchemy backend that hands out one :class:`LeanConnection`.

    Its statements run on ``database`` (:class:`fleetflow.db.direct.
    Database`), the node store's, so a flow and a node row can be written
    in one transaction.
    """

    def __init__(self, database):
        super().__init__(_conf(database.engine), engine=database.engine)
        self.database = database
        self._connection = None
        self._connection_lock = threading.Lock()

    def get_connection(self):
        with self._connection_lock:
            if self._connection is None:
                self._connection = LeanConnection(
                    self, taskflow_overrides.upgrade_lock(self))
                self._connection.validate()
            return self._connection


def get_backend(conf, database):
    """The backend named by ``[persistence] backend``."""
    if conf.persistence.backend == 'memory':
        return impl_memory.MemoryBackend()
    return SharedConnectionBackend(database)


def upgrade(engine):
    """Create or upgrade TaskFlow's logbook tables, index them, and clean.

    TaskFlow's migrations index no ``parent_uuid``: finding or deleting a
    book's flows, or a flow's atoms, read every row of the table. The
    flows and atoms whose book is gone are deleted: on SQLite, deleting a
    book used to leave them behind.
    """
    backend = impl_sqlalchemy.SQLAlchemyBackend(_conf(engine), engine=engine)
    with contextlib.closing(backend.get_connection()) as connection:
        connection.upgrade()
        tables = taskflow_overrides.tables(connection)
    children = ((tables.flowdetails, tables.logbooks),
                (tables.atomdetails, tables.flowdetails))
    for table, _parent in children:
        sa.Index('ix_fleetflow_%s_parent' % table.name,
                 table.c.parent_uuid).create(engine, checkfirst=True)
    with engine.begin() as conn:
        for table, parent in children:
            conn.execute(table.delete().where(
                table.c.parent_uuid.not_in(sa.select(parent.c.uuid))))
