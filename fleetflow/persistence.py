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
  timings, which a resumed flow does not need) is not written at once: it
  is written with the atom's next real change, or when the flow finishes.
"""

import contextlib
import threading

import sqlalchemy as sa
from taskflow import exceptions as tf_exceptions
from taskflow.persistence.backends import impl_memory
from taskflow.persistence.backends import impl_sqlalchemy
from taskflow.persistence import models as tf_models
from taskflow import states

FINISHED = (states.SUCCESS, states.REVERTED, states.FAILURE)


def _conf(engine):
    return {'connection': engine.url.render_as_string(hide_password=False)}


class LeanConnection(impl_sqlalchemy.Connection):
    """TaskFlow's SQL connection with fewer and cheaper writes."""

    def __init__(self, backend, upgrade_lock):
        super().__init__(backend, upgrade_lock)
        self._lock = threading.Lock()
        self._written = {}
        self._flow_atoms = {}

    def update_atom_details(self, atom_detail):
        values = atom_detail.to_dict()
        with self._lock:
            last = self._written.get(atom_detail.uuid)
        if last is not None and _same_but_meta(last, values):
            return atom_detail
        self._write_atom(values)
        return atom_detail

    def _write_atom(self, values):
        table = self._tables.atomdetails
        with self._engine.begin() as conn:
            updated = conn.execute(
                table.update().where(table.c.uuid == values['uuid'])
                .values(values)).rowcount
        if not updated:
            raise tf_exceptions.NotFound(
                "No atom details found with uuid '%s'" % values['uuid'])
        with self._lock:
            self._written[values['uuid']] = values

    def update_flow_details(self, flow_detail):
        flows, atoms = self._tables.flowdetails, self._tables.atomdetails
        finished = flow_detail.state in FINISHED
        with self._engine.begin() as conn:
            updated = conn.execute(
                flows.update().where(flows.c.uuid == flow_detail.uuid)
                .values(flow_detail.to_dict())).rowcount
            if not updated:
                raise tf_exceptions.NotFound(
                    "No flow details found with uuid '%s'"
                    % flow_detail.uuid)
            known = self._known_atoms(conn, flow_detail.uuid)
            for atom_detail in flow_detail:
                values = atom_detail.to_dict()
                if atom_detail.uuid not in known:
                    conn.execute(atoms.insert().values(
                        parent_uuid=flow_detail.uuid,
                        atom_type=tf_models.atom_detail_type(atom_detail),
                        **values))
                    known.add(atom_detail.uuid)
                elif finished and values != self._written.get(
                        atom_detail.uuid):
                    conn.execute(atoms.update()
                                 .where(atoms.c.uuid == atom_detail.uuid)
                                 .values(values))
                with self._lock:
                    self._written[atom_detail.uuid] = values
        if finished:
            self._forget_flow(flow_detail)
        return flow_detail

    def _known_atoms(self, conn, flow_uuid):
        with self._lock:
            known = self._flow_atoms.get(flow_uuid)
        if known is None:
            atoms = self._tables.atomdetails
            known = set(conn.execute(
                sa.select(atoms.c.uuid)
                .where(atoms.c.parent_uuid == flow_uuid)).scalars())
            with self._lock:
                self._flow_atoms[flow_uuid] = known
        return known

    def _forget_flow(self, flow_detail):
        with self._lock:
            self._flow_atoms.pop(flow_detail.uuid, None)
            for atom_detail in flow_detail:
                self._written.pop(atom_detail.uuid, None)


def _same_but_meta(last, values):
    return all(last.get(key) == value for key, value in values.items()
               if key != 'meta')


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
