"""Flow persistence: TaskFlow logbooks in fleetflow's SQL database.

TaskFlow's stock SQLAlchemy backend builds a new ``MetaData`` and new table
objects for every connection it hands out, and the engine asks for a
connection on every save. New table objects defeat SQLAlchemy's compiled
statement cache, so every save compiled its statements again. The backend
here hands out one connection object for its whole life (it holds no DBAPI
connection of its own: each call borrows one from the engine's pool), and
runs on fleetflow's own pooled engine instead of a new SQLite connection
per call.
"""

import contextlib
import threading

from taskflow.persistence.backends import impl_memory
from taskflow.persistence.backends import impl_sqlalchemy


def _conf(engine):
    return {'connection': engine.url.render_as_string(hide_password=False)}


class SharedConnectionBackend(impl_sqlalchemy.SQLAlchemyBackend):
    """SQLAlchemy backend that reuses a single connection object."""

    def __init__(self, engine):
        super().__init__(_conf(engine), engine=engine)
        self._connection = None
        self._connection_lock = threading.Lock()

    def get_connection(self):
        with self._connection_lock:
            if self._connection is None:
                self._connection = super().get_connection()
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
