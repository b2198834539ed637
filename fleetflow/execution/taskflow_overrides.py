"""Every private TaskFlow name fleetflow overrides or reads, in one place.

fleetflow leans on TaskFlow's public API; where it does not, the reason is
written beside the name, and this module is the only one that reaches
past that API. It is tested against the TaskFlow releases that
``requirements.txt`` allows, and only those: a new release may rename any
of these names.

The engine (:class:`Engine`) is TaskFlow's serial engine, registered as
the ``fleetflow`` engine (``taskflow.engines`` entry point) so that
conductors and ``engines.load`` find it by name, with these changes:

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

A TaskFlow bug is fixed here too, only where it is present
(:func:`fix_retry_history`).
"""

import threading

from taskflow.conductors.backends import impl_blocking
from taskflow.conductors.backends import impl_nonblocking
from taskflow.engines.action_engine import compiler
from taskflow.engines.action_engine import engine as action_engine
from taskflow.engines.action_engine import executor
from taskflow.listeners import base as listener_base
from taskflow.persistence import models
from taskflow import storage as tf_storage
from taskflow.types import failure as tf_failure
from taskflow.utils import misc

NAME = 'fleetflow'
#: a shared flow's attribute: the sets of provided names it was validated for
_VALIDATED = '_fleetflow_validated'


# The engine

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
        # ``_lock``: a reader-writer lock cost more than the calls it
        # guarded; one engine's storage is used by one thread at a time.
        self._lock = _Lock()

    def set_task_progress(self, task_name, progress, details=None):
        if details is not None:
            super().set_task_progress(task_name, progress, details)

    # ``_save_atom_detail`` / ``_save_flow_detail``: TaskFlow wraps each
    # save in a retry on StorageFailure and copies the detail; fleetflow's
    # backends never raise it, and every task transition pays the save.
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
            # ``_create_atom_detail``: the details the storage would make,
            # made here so that a new flow is recorded in one transaction.
            details.append(Storage._create_atom_detail(
                atom.name, (models.TaskDetail if data['kind'] == compiler.TASK
                            else models.RetryDetail),
                atom_version=misc.get_version_string(atom)))
    return details


class Engine(action_engine.SerialActionEngine):
    """TaskFlow's serial engine: shared compilations, lean storage."""

    def __init__(self, flow, flow_detail, backend, options):
        super().__init__(flow, flow_detail, backend, options)
        # ``_task_executor``: no progress callbacks on shared task objects.
        self._task_executor = TaskExecutor()
        # ``_compiler``: one compilation per shared flow, not per engine.
        self._compiler = _SharedCompiler(flow)

    @property
    def storage(self):
        # ``_flow_detail``, ``_backend``: TaskFlow's storage property makes
        # its own Storage class; this one saves less.
        storage = self.__dict__.get('_fleetflow_storage')
        if storage is None:
            storage = self.__dict__['_fleetflow_storage'] = Storage(
                self._flow_detail, backend=self._backend,
                scope_fetcher=self._fetch_scopes)
        return storage

    def validate(self):
        # ``_validated``, ``_flow``, ``_reverse_mapping``: a shared flow is
        # validated once per set of provided names, not per engine.
        if self._validated:
            return
        provided = frozenset(self.storage._reverse_mapping)
        validated = self._flow.__dict__.setdefault(_VALIDATED, set())
        if provided in validated:
            self._validated = True
            return
        super().validate()
        validated.add(provided)

    def _fetch_scopes(self, atom_name):
        # ``_compiled``, ``_runtime``: what TaskFlow's own scope fetcher
        # reads, for the storage made above.
        if self._compiled:
            return self._runtime.fetch_scopes_for(atom_name)
        return None


def flow_detail(engine):
    """The flow detail ``engine``'s storage works on (no copy).

    ``_flowdetail``: the listener that notes atom times changes the atom
    details in memory, to be saved with their next save; the public
    accessors return copies.
    """
    return getattr(engine.storage, '_flowdetail', None)


# Listeners

class Listener(listener_base.Listener):
    """TaskFlow's listener base with public hooks.

    ``_task_receiver``, ``_retry_receiver``, ``_flow_receiver`` and
    ``_engine`` are TaskFlow's documented way to write a listener, though
    private names; fleetflow's listeners implement :meth:`on_task`,
    :meth:`on_retry` and :meth:`on_flow` instead.
    """

    @property
    def engine(self):
        return self._engine

    def on_task(self, state, details):
        pass

    def on_retry(self, state, details):
        pass

    def on_flow(self, state, details):
        pass

    def _task_receiver(self, state, details):
        self.on_task(state, details)

    def _retry_receiver(self, state, details):
        self.on_retry(state, details)

    def _flow_receiver(self, state, details):
        self.on_flow(state, details)


# Persistence

def tables(connection):
    """The table objects of TaskFlow's SQL ``connection`` (``_tables``).

    fleetflow's lean connection compiles its own statements on them.
    """
    return connection._tables


def upgrade_lock(backend):
    """The lock TaskFlow's SQL backend gives its connections."""
    return backend._upgrade_lock


# Conductors

class _CheckedJobs:
    """TaskFlow's conductor, running a job only as ``load_job`` allows.

    ``_engine_from_job``: TaskFlow's imports the factory a flow detail
    names and merges a job's ``store`` over the flow's inputs; fleetflow
    never runs a name read from data. ``load_job(job)`` returns the
    engine, or raises one of ``done`` for a job whose flow finished
    already: ``_dispatch_job`` then consumes it (returns True) unrun.
    """

    def __init__(self, load_job, done, on_done_job, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._load_job = load_job
        self._done = done
        self._on_done_job = on_done_job

    def _engine_from_job(self, job):
        return self._load_job(job)

    def _dispatch_job(self, job):
        try:
            return super()._dispatch_job(job)
        except self._done as e:
            self._on_done_job(job, e)
            return True


class BlockingConductor(_CheckedJobs, impl_blocking.BlockingConductor):
    """TaskFlow's ``blocking`` conductor with fleetflow's job check."""


class NonBlockingConductor(_CheckedJobs,
                           impl_nonblocking.NonBlockingConductor):
    """TaskFlow's ``nonblocking`` conductor with fleetflow's job check."""


def close_zookeeper_board(jobboard):
    """Say that a ZooKeeper board's session ends on purpose (``_closing``).

    The board stops only a client of its own; with fleetflow's client it
    would warn of a lost session.
    """
    jobboard._closing = True


# A TaskFlow bug

def _decode_results(results):
    return [(data, {name: tf_failure.Failure.from_dict(failure)
                    for name, failure in failures.items()})
            for data, failures in results or []]


def _retry_detail_from_dict(cls, data):
    obj = super(models.RetryDetail, cls).from_dict(data)
    obj.results = _decode_results(obj.results)
    return obj


#: TaskFlow's own ``RetryDetail.from_dict``, fixed or not
STOCK_RETRY_FROM_DICT = models.RetryDetail.from_dict


def retry_history_survives(from_dict=None):
    """Whether a retry's history survives ``to_dict``/``from_dict``."""
    from_dict = from_dict or models.RetryDetail.from_dict
    failure = tf_failure.Failure.from_exception(RuntimeError('probe'))
    detail = models.RetryDetail('probe', uuid='probe')
    detail.results = [('value', {'task': failure})]
    return from_dict(detail.to_dict()).results[0][0] == 'value'


def fix_retry_history():
    """Fix ``RetryDetail.from_dict`` where it loses retries' values.

    In TaskFlow 6.5.0 and earlier it decodes a retry's history with a loop
    variable that shadows each entry's value, so an entry with failures
    comes back with its last failure (a dict) in place of the value the
    retry returned. fleetflow's polling retries read their deadline back
    from that history (:class:`fleetflow.retries.PollUntilDeadline`): a
    poll resumed after a restart got a dict for a deadline and cost its
    node a launch attempt. A probe decides: a TaskFlow without the bug is
    left as it is.

    :returns: whether the fix was installed.
    """
    if retry_history_survives():
        return False
    models.RetryDetail.from_dict = classmethod(_retry_detail_from_dict)
    return True


#: whether this process runs with the fix (the bug was found)
RETRY_HISTORY_FIXED = fix_retry_history()
