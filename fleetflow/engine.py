"""The TaskFlow engine that runs fleetflow's flows.

It is TaskFlow's serial engine, registered as the ``fleetflow`` engine
(``taskflow.engines`` entry point) so that conductors and ``engines.load``
find it by name, with these changes:

- Its flows are shared: a flow factory builds one flow for every node with
  the same settings (:func:`fleetflow.flows.shared`), each engine keeps its
  state in its own storage, and a flow is compiled once, by the first
  engine that runs it. Building and compiling a flow cost more than running
  a short one.
- It does not listen for progress that tasks report
  (:class:`TaskExecutor`): fleetflow's tasks report none, and listening
  meant registering a callback on the task object that every engine
  shares.
- Its storage unit saves less, and takes a plain re-entrant lock where
  TaskFlow's takes a reader-writer lock (below): an engine's storage is
  used by one thread at a time, and the reader-writer lock cost more than
  the storage calls it guarded.
- It validates a shared flow's arguments once for each set of names its
  store provides (what validation checks depends on nothing else), not
  for every engine, nor again each time a parked flow is resumed.

What the storage unit saves, per atom:

- The progress the engine reports itself (0.0 when a task starts, 1.0 when
  it ends, and no details) is not kept: it says no more than the task's
  state, which is saved, and it cost two saves a task.
- A save is not wrapped in TaskFlow's retry on ``StorageFailure``: the
  backends fleetflow uses (:mod:`fleetflow.persistence`, TaskFlow's memory
  backend) never raise it, and the wrapper cost more than the save.
"""

import threading

from taskflow.engines.action_engine import compiler
from taskflow.engines.action_engine import engine as action_engine
from taskflow.engines.action_engine import executor
from taskflow.persistence import models
from taskflow import storage as tf_storage
from taskflow.utils import misc

NAME = 'fleetflow'
#: a shared flow's attribute: the sets of provided names it was validated for
_VALIDATED = '_fleetflow_validated'


class _Lock:
    """One re-entrant lock, taken to read and to write."""

    def __init__(self):
        self._lock = threading.RLock()

    def read_lock(self):
        return self._lock

    write_lock = read_lock


class Storage(tf_storage.Storage):
    """TaskFlow's storage unit without the saves a flow does not need."""

    def __init__(self, flow_detail, backend=None, scope_fetcher=None):
        super().__init__(flow_detail, backend=backend,
                         scope_fetcher=scope_fetcher)
        self._lock = _Lock()

    def set_task_progress(self, task_name, progress, details=None):
        if details is not None:
            super().set_task_progress(task_name, progress, details)

    def _save_atom_detail(self, conn, original_atom_detail, atom_detail):
        original_atom_detail.update(conn.update_atom_details(atom_detail))
        return original_atom_detail

    def _save_flow_detail(self, conn, original_flow_detail, flow_detail):
        original_flow_detail.update(conn.update_flow_details(flow_detail))
        return original_flow_detail


class TaskExecutor(executor.SerialTaskExecutor):
    """Runs tasks one after another, without listening for progress."""

    def execute_task(self, task, task_uuid, arguments,
                     progress_callback=None):
        return super().execute_task(task, task_uuid, arguments)

    def revert_task(self, task, task_uuid, arguments, result, failures,
                    progress_callback=None):
        return super().revert_task(task, task_uuid, arguments, result,
                                   failures)


class _SharedCompiler:
    """Compiles a flow once; the flow keeps its compilation."""

    ATTRIBUTE = '_fleetflow_compilation'

    def __init__(self, flow):
        self._flow = flow

    def compile(self):
        compilation = getattr(self._flow, self.ATTRIBUTE, None)
        if compilation is None:
            compilation = compiler.PatternCompiler(self._flow).compile()
            setattr(self._flow, self.ATTRIBUTE, compilation)
        return compilation


def atom_details(flow):
    """New atom details for every atom of ``flow``, all PENDING.

    They are those the engine's storage would make when it first prepares
    the flow; a flow recorded with them is saved once, not twice.
    """
    details = []
    graph = _SharedCompiler(flow).compile().execution_graph
    for atom, data in graph.nodes(data=True):
        if data['kind'] in compiler.ATOMS:
            details.append(Storage._create_atom_detail(
                atom.name, (models.TaskDetail if data['kind'] == compiler.TASK
                            else models.RetryDetail),
                atom_version=misc.get_version_string(atom)))
    return details


class Engine(action_engine.SerialActionEngine):
    """TaskFlow's serial engine: shared compilations, lean storage."""

    def __init__(self, flow, flow_detail, backend, options):
        super().__init__(flow, flow_detail, backend, options)
        self._task_executor = TaskExecutor()
        self._compiler = _SharedCompiler(flow)

    @property
    def storage(self):
        storage = self.__dict__.get('_fleetflow_storage')
        if storage is None:
            storage = self.__dict__['_fleetflow_storage'] = Storage(
                self._flow_detail, backend=self._backend,
                scope_fetcher=self._fetch_scopes)
        return storage

    def validate(self):
        if self._validated:
            return
        # The names the store and the flow's atoms provide: a TaskFlow
        # storage's index of them, read rather than rebuilt.
        provided = frozenset(self.storage._reverse_mapping)
        validated = self._flow.__dict__.setdefault(_VALIDATED, set())
        if provided in validated:
            self._validated = True
            return
        super().validate()
        validated.add(provided)

    def _fetch_scopes(self, atom_name):
        if self._compiled:
            return self._runtime.fetch_scopes_for(atom_name)
        return None
