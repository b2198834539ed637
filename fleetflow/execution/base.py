"""The interface of a way to run flows, and what both ways share."""

import abc
import contextlib
import logging
import threading
import uuid

from taskflow import engines
from taskflow.persistence import models as tf_models
from taskflow import states
from taskflow import storage as tf_storage

from fleetflow.db import locks
from fleetflow import exceptions
from fleetflow.execution import taskflow_overrides
from fleetflow import flowinfo
from fleetflow.flows import registry
from fleetflow import stats

LOG = logging.getLogger(__name__)

FINISHED = (states.SUCCESS, states.REVERTED, states.FAILURE)
#: finished flows kept in a node's logbook when another is recorded (what
#: ``fleetflow flow show`` shows of a node whose delete keeps failing)
FLOWS_KEPT = 4


def _injector(inputs):
    """The atom detail in which TaskFlow keeps a flow's store."""
    injector = tf_models.TaskDetail(tf_storage.Storage.injector_name,
                                    uuid=str(uuid.uuid4()))
    injector.results = dict(inputs)
    injector.state = states.SUCCESS
    return injector


def load_engine(ctx, book, detail, flow=None):
    """The engine of flow ``detail`` of the node whose logbook is ``book``.

    The flow is rebuilt by fleetflow's registry of flow factories, never by
    the name the detail holds (:mod:`fleetflow.flows.registry`), unless
    the caller just built it (``flow``).

    :raises UntrustedFlow: when the detail is refused (logged).
    """
    if flow is None:
        flow = registry.rebuild(detail, book.uuid)
    return engines.load(flow, flow_detail=detail, book=book,
                        backend=ctx.persistence,
                        engine=taskflow_overrides.NAME)


def listen(engine, ctx):
    """Register what every flow's engine reports to, wherever it runs."""
    flowinfo.AtomTimes(engine).register()
    if ctx.stats.client is not None:
        stats.LaunchResults(engine, ctx).register()


def forget_logbook(ctx, node_id):
    """Remove the logbook of a node that is gone (if it is still there)."""
    with contextlib.closing(ctx.persistence.get_connection()) as conn:
        with contextlib.suppress(Exception):
            conn.destroy_logbook(node_id)


class FlowRunner(metaclass=abc.ABCMeta):
    """Runs the launch and delete flows of nodes; one flow per node.

    :param on_done: called when a flow finished, with what the runner
        knows of it (``None`` when it cannot say which); the launcher
        that holds the runner sets it.
    """

    #: whether the launcher looks after every node and request, whichever
    #: launcher started them (launchers share the flows), or only its own
    fleet_wide = False

    def __init__(self, ctx, on_done=None):
        self.ctx = ctx
        self.on_done = on_done
        #: how many times a flow was parked
        self.parks = 0

    @property
    def transactions(self):
        """Database transactions made by processes the runner started."""
        return 0

    # Starting flows

    def launch(self, node):
        """Start the launch flow of a building node row."""
        return self.start_flow(node['id'], 'launch',
                               self.inputs(node, 'launch'))

    def delete(self, node):
        """Start the delete flow of a node row."""
        return self.start_flow(node['id'], 'delete',
                               self.inputs(node, 'delete'))

    def inputs(self, node, kind):
        """The inputs of the flow of ``kind`` of a node row."""
        return registry.factory(kind).inputs_for(self.ctx, node)

    @abc.abstractmethod
    def start_flow(self, node_id, kind, inputs):
        """Run (or have run) a new flow of ``kind`` with ``inputs``.

        :raises FleetflowError: when the node has a flow running.
        """

    def record_flow(self, node_id, kind, inputs):
        """Save a new flow detail of ``kind`` with ``inputs`` in the logbook.

        The detail holds the factory and its inputs, so that any process
        can rebuild the flow; the node row points at it (``flow_id``).
        The node's finished flows but the :data:`FLOWS_KEPT` newest are
        removed (SQL persistence).

        :returns: ``(flow, flow detail, logbook)``
        """
        if inputs.get('node_id') != node_id:
            raise registry.UntrustedFlow('inputs for node %s name node %s'
                                         % (node_id, inputs.get('node_id')))
        flow, detail = registry.record(kind, inputs)
        # The inputs are the flow's store; saved with the detail in one
        # transaction, a crash cannot leave a flow that lacks them.
        detail.add(_injector(inputs))
        for atom_detail in taskflow_overrides.atom_details(flow):
            detail.add(atom_detail)
        starts_from = registry.factory(kind).starts_from

        def point_at_it(tx=None):
            # A row read before another flow moved the node on (a launch
            # that readied it, a delete that removed it) starts nothing.
            if not self.ctx.store.update_node(node_id, tx=tx,
                                              expected=starts_from,
                                              flow_id=detail.uuid):
                raise exceptions.NodeStateConflict(
                    'node %s is not %s: no %s flow recorded' % (
                        node_id, ' or '.join(sorted(starts_from)), kind))

        # A new logbook object: saving it adds to the node's book, if any.
        book = tf_models.LogBook('node-%s' % node_id, uuid=node_id)
        with contextlib.closing(self.ctx.persistence.get_connection()) \
                as conn:
            add_flow = getattr(conn, 'add_flow', None)
            if add_flow is not None:
                # The node store shares the flows' database: one transaction.
                add_flow(book, detail, also=point_at_it, keep=FLOWS_KEPT)
                return flow, detail, book
            point_at_it()
            book.add(detail)
            conn.save_logbook(book)
        return flow, detail, book

    @abc.abstractmethod
    def resume_all(self):
        """Resume every flow that did not finish; return how many."""

    # What the launcher asks

    def owner_lock(self):
        """The lock a launcher holds while it runs (None: no lock).

        Only one launcher may run a database's flows in its own process.
        """
        return None

    def use_layout(self, layout):
        """The launcher reloaded its layout: flows started now use it."""

    def pass_turn(self):
        """A context manager around a launcher's pass."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    def is_running(self, node_id):
        """Whether the node has a flow running (or waiting to)."""

    @abc.abstractmethod
    def running(self):
        """How many flows run (or wait to)."""

    # Starting and stopping

    def start(self):
        """Start what runs beside the flows (once, before ``resume_all``)."""

    @abc.abstractmethod
    def stop(self, timeout=None):
        """Stop at task boundaries; unfinished flows resume later."""


class HostRunner(FlowRunner):
    """A runner whose flows run on this host, in its own processes.

    It knows each flow it runs by its node, and resumes every unfinished
    flow of the database when it starts: only one launcher may run a
    database's flows this way (its owner lock).
    """

    def __init__(self, ctx, on_done=None):
        super().__init__(ctx, on_done=on_done)
        self._runs = {}
        self._lock = threading.Lock()

    def owner_lock(self):
        return locks.OwnerLock(self.ctx.engine)

    def _claim(self, node_id, run):
        """Make ``run`` the node's flow (the lock held).

        :raises FleetflowError: when the node has a flow running.
        """
        if node_id in self._runs:
            raise exceptions.FleetflowError(
                'node %s already has a flow running' % node_id)
        self._runs[node_id] = run

    def resume_all(self):
        """Resume every flow that did not finish; return how many.

        A flow the registry refuses is logged and skipped; the logbook of
        a node that is gone is removed.
        """
        resumed = 0
        with contextlib.closing(self.ctx.persistence.get_connection()) \
                as conn:
            books = list(conn.get_logbooks(lazy=False))
        for book in books:
            unfinished = [fd for fd in book if fd.state not in FINISHED]
            if not unfinished:
                if self.ctx.store.find_node(book.uuid) is None:
                    forget_logbook(self.ctx, book.uuid)
                continue
            for detail in unfinished:
                LOG.info('[node %s] Resuming flow %s (%s)', book.uuid,
                         detail.name, detail.state)
                try:
                    # Checked now, so that a refused flow is not started.
                    registry.recorded(detail, book.uuid)
                    self.resume(book, detail)
                except exceptions.FleetflowError as e:
                    # One node's bad logbook must not stop the others.
                    LOG.error('[node %s] Flow %s not resumed: %s',
                              book.uuid, detail.name, e)
                    continue
                resumed += 1
        return resumed

    @abc.abstractmethod
    def resume(self, book, detail):
        """Run the unfinished flow ``detail`` of the node's ``book``."""

    def is_running(self, node_id):
        with self._lock:
            return node_id in self._runs

    def running(self):
        with self._lock:
            return len(self._runs)
