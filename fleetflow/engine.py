"""The TaskFlow engine that runs fleetflow's flows.

It is TaskFlow's serial engine with a leaner storage unit; it is
registered as the ``fleetflow`` engine (``taskflow.engines`` entry point),
so that conductors and ``engines.load`` find it by name.

What the storage unit saves, per atom:

- The progress the engine reports itself (0.0 when a task starts, 1.0 when
  it ends, and no details) is not kept: it says no more than the task's
  state, which is saved, and it cost two saves a task. Progress a task
  reports itself is saved as before.
- A save is not wrapped in TaskFlow's retry on ``StorageFailure``: the
  backends fleetflow uses (:mod:`fleetflow.persistence`, TaskFlow's memory
  backend) never raise it, and the wrapper cost more than the save.
"""

from taskflow.engines.action_engine import engine as action_engine
from taskflow import storage as tf_storage

NAME = 'fleetflow'


class Storage(tf_storage.Storage):
    """TaskFlow's storage unit without the saves a flow does not need."""

    def set_task_progress(self, task_name, progress, details=None):
        if details is not None:
            super().set_task_progress(task_name, progress, details)

    def _save_atom_detail(self, conn, original_atom_detail, atom_detail):
        original_atom_detail.update(conn.update_atom_details(atom_detail))
        return original_atom_detail

    def _save_flow_detail(self, conn, original_flow_detail, flow_detail):
        original_flow_detail.update(conn.update_flow_details(flow_detail))
        return original_flow_detail


class Engine(action_engine.SerialActionEngine):
    """TaskFlow's serial engine on :class:`Storage`."""

    @property
    def storage(self):
        storage = self.__dict__.get('_fleetflow_storage')
        if storage is None:
            storage = self.__dict__['_fleetflow_storage'] = Storage(
                self._flow_detail, backend=self._backend,
                scope_fetcher=self._fetch_scopes)
        return storage

    def _fetch_scopes(self, atom_name):
        if self._compiled:
            return self._runtime.fetch_scopes_for(atom_name)
        return None
