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

from fleetflow import taskflow_fixes  # noqa: F401 (fixes RetryDetail)

FINISHED = (states.SUCCESS, states.REVERTED, states.FAILURE)


def _conf(engine):
    return {'connection': engine.url.render_as_string(hide_password=False)}


class LeanConnection(impl_sqlalchemy.Connection):
    """TaskFlow's SQL connection with fewer and cheaper writes.

    Its statements are built once, so that SQLAlchemy neither builds nor
    keys them again on every save.
    """

    def __init__(self, backend, upgrade_lock):
        super().__init__(backend, upgrade_lock)
        self._lock = threading.Lock()
        self._written = {}
        self._states = {}
        self._flow_atoms = {}
        tables = self._tables
        self._statements = {
            name: (table.update().where(table.c.uuid == sa.bindparam('key')),
                   table.insert())
            for name, table in (('logbooks', tables.logbooks),
                                ('flows', tables.flowdetails),
                                ('atoms', tables.atomdetails))}
        self._atoms_of_flow = (
            sa.select(tables.atomdetails.c.uuid)
            .where(tables.atomdetails.c.parent_uuid == sa.bindparam('key')))
        self._book = (
            sa.select(tables.logbooks.c.uuid)
            .where(tables.logbooks.c.uuid == sa.bindparam('key')))
        self._flows_of_book = (
            sa.select(tables.flowdetails.c.uuid)
            .where(tables.flowdetails.c.parent_uuid == sa.bindparam('key')))

    def _update(self, conn, table, values):
        update = self._statements[table][0]
        return conn.execute(update, dict(values, key=values['uuid'])).rowcount

    def _insert(self, conn, table, rows):
        conn.execute(self._statements[table][1], rows)

    def update_atom_details(self, atom_detail):
        values = atom_detail.to_dict()
        with self._lock:
            last = self._written.get(atom_detail.uuid)
        if last is not None and _deferrable(last, values):
            return atom_detail
        with self._engine.begin() as conn:
            if not self._update(conn, 'atoms', values):
                raise tf_exceptions.NotFound(
                    "No atom details found with uuid '%s'" % values['uuid'])
        with self._lock:
            self._written[values['uuid']] = values
        return atom_detail

    def save_logbook(self, book):
        with self._engine.begin() as conn:
            values = book.to_dict()
            if not self._update(conn, 'logbooks', values):
                self._insert(conn, 'logbooks', [values])
            known = set(conn.execute(self._flows_of_book,
                                     {'key': book.uuid}).scalars())
            for flow_detail in book:
                if flow_detail.uuid not in known:
                    self._insert_flow(conn, book.uuid, flow_detail)
        return book

    def add_flow(self, book, flow_detail, also=None):
        """Save a new flow detail and its atoms in ``book``, at once.

        One transaction: the book's row is made if it has none, and
        ``also(conn)``, when given, runs in the same transaction.
        """
        with self._engine.begin() as conn:
            if conn.execute(self._book, {'key': book.uuid}).first() is None:
                self._insert(conn, 'logbooks', [book.to_dict()])
            self._insert_flow(conn, book.uuid, flow_detail)
            if also is not None:
                also(conn)
        book.add(flow_detail)
        return book

    def _insert_flow(self, conn, book_uuid, flow_detail):
        values = flow_detail.to_dict()
        self._insert(conn, 'flows', [dict(values, parent_uuid=book_uuid)])
        self._add_atoms(conn, flow_detail, set())
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
        with self._engine.begin() as conn:
            if write_row:
                if not self._update(conn, 'flows', values):
                    raise tf_exceptions.NotFound(
                        "No flow details found with uuid '%s'"
                        % flow_detail.uuid)
                with self._lock:
                    self._written[flow_detail.uuid] = values
            if new_atoms:
                self._add_atoms(conn, flow_detail,
                                self._known_atoms(conn, flow_detail.uuid))
            if finished:
                unwritten = [dict(values, key=values['uuid']) for values in (
                    atom_detail.to_dict() for atom_detail in flow_detail)
                    if values != self._written.get(values['uuid'])]
                if unwritten:
                    conn.execute(self._statements['atoms'][0], unwritten)
        if finished:
            self._forget_flow(flow_detail)
        return flow_detail

    def _add_atoms(self, conn, flow_detail, known):
        new = [atom_detail for atom_detail in flow_detail
               if atom_detail.uuid not in known]
        if not new:
            return
        rows = [dict(atom_detail.to_dict(), parent_uuid=flow_detail.uuid,
                     atom_type=tf_models.atom_detail_type(atom_detail))
                for atom_detail in new]
        self._insert(conn, 'atoms', rows)
        with self._lock:
            known.update(atom_detail.uuid for atom_detail in new)
            self._flow_atoms[flow_detail.uuid] = known
            for row in rows:
                row.pop('parent_uuid')
                row.pop('atom_type')
                self._written[row['uuid']] = row

    def _known_atoms(self, conn, flow_uuid):
        with self._lock:
            known = self._flow_atoms.get(flow_uuid)
        if known is None:
            known = set(conn.execute(self._atoms_of_flow,
                                     {'key': flow_uuid}).scalars())
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
    """SQLAlchemy backend that hands out one :class:`LeanConnection`."""

    def __init__(self, engine):
        super().__init__(_conf(engine), engine=engine)
        self._connection = None
        self._connection_lock = threading.Lock()

    def get_connection(self):
        with self._connection_lock:
            if self._connection is None:
                self._connection = LeanConnection(self, self._upgrade_lock)
                self._connection.validate()
            return self._connection


def get_backend(conf, engine):
    """The backend named by ``[persistence] backend``."""
    if conf.persistence.backend == 'memory':
        return impl_memory.MemoryBackend()
    return SharedConnectionBackend(engine)


def upgrade(engine):
    """Create or upgrade TaskFlow's logbook tables."""
    backend = impl_sqlalchemy.SQLAlchemyBackend(_conf(engine), engine=engine)
    with contextlib.closing(backend.get_connection()) as connection:
        connection.upgrade()
