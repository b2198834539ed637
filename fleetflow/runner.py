"""Runs launch and delete flows on a bounded pool of workers.

Every flow has a flow detail in its node's logbook (the logbook's uuid is
the node's id), with the factory and inputs that rebuild it, so that a
process that starts again resumes every flow that did not finish.

A flow that waits holds no worker: when a poll finds that it must wait
(:class:`~fleetflow.exceptions.StillWaiting`) or the cloud asks to be
called later (a rate limit), the flow's engine is suspended at the next
task boundary and parked. It is resumed when the provider's instance
listing shows its instance changed, or when its time to try again comes.
"""

import collections
from concurrent import futures
import contextlib
import functools
import logging
import threading
import uuid

from taskflow import engines
from taskflow.listeners import base as listener_base
from taskflow.persistence import models as tf_models
from taskflow import states
from taskflow import storage as tf_storage
from taskflow.types import failure as tf_failure

from fleetflow.drivers import base as driver_base
from fleetflow import engine as ff_engine
from fleetflow import exceptions
from fleetflow import flowinfo
from fleetflow.flows import delete as delete_flows
from fleetflow.flows import launch as launch_flows
from fleetflow.flows import registry
from fleetflow import logutils
from fleetflow import retries
from fleetflow import stats

LOG = logging.getLogger(__name__)

FINISHED = (states.SUCCESS, states.REVERTED, states.FAILURE)
PARKING = (exceptions.StillWaiting, driver_base.RateLimitError)
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


def load_engine(ctx, book, detail):
    """The engine of flow ``detail`` of the node whose logbook is ``book``.

    The flow is rebuilt by fleetflow's registry of flow factories, never by
    the name the detail holds (:mod:`fleetflow.flows.registry`).

    :raises UntrustedFlow: when the detail is refused (logged).
    """
    return engines.load(registry.rebuild(detail, book.uuid),
                        flow_detail=detail, book=book,
                        backend=ctx.persistence, engine=ff_engine.NAME)


def listen(engine, ctx):
    """Register what every flow's engine reports to, wherever it runs."""
    flowinfo.AtomTimes(engine).register()
    if ctx.stats.client is not None:
        stats.LaunchResults(engine, ctx).register()


class FlowRun:
    """One flow of one node, waiting to start, running, parked or done.

    ``load`` makes its engine; a worker calls it, so that whoever starts
    the flow does not pay for recording and compiling it.
    """

    def __init__(self, node_id, name, load):
        self.node_id = node_id
        self.name = name
        self.load = load
        self.engine = None
        self.flow_id = None
        self.park = None
        #: asks again whether a flow parked before a poll must still wait
        self.recheck = None
        self.watch = None
        self.generation = 0
        self.state = None
        self.error = None
        self.done = threading.Event()


class OnWait(listener_base.Listener):
    """Hands a flow's waits to ``wait(reason, recheck)``.

    A task says it has to wait by failing with one of ``PARKING``; a poll
    about to run is asked first (:func:`~fleetflow.retries.
    waiting_before_poll`) when ``ask_before_poll()`` says so, and a
    poll that would only find it must wait is waited for before it runs,
    failing no attempt. ``recheck`` (None for a task's failure) asks that
    poll again. The in-process runner parks the flow
    (:meth:`Runner._park_run`); a conductor waits in place.
    """

    def __init__(self, engine, wait, ask_before_poll):
        super().__init__(engine, task_listen_for=(states.FAILURE,),
                         flow_listen_for=(),
                         retry_listen_for=(states.SUCCESS,))
        self._wait = wait
        self._ask_before_poll = ask_before_poll

    def _task_receiver(self, state, details):
        failure = details.get('result')
        if (isinstance(failure, tf_failure.Failure)
                and failure.check(*PARKING)
                and failure.exception is not None):
            self._wait(failure.exception, None)

    def _retry_receiver(self, state, details):
        if self._ask_before_poll():
            recheck = functools.partial(retries.waiting_before_poll,
                                        self._engine, details)
            reason = recheck()
            if reason is not None:
                self._wait(reason, recheck)


class Runner:
    """Runs, parks and resumes flows; one flow per node at a time.

    :param on_done: called with each :class:`FlowRun` that finished.
    """

    def __init__(self, ctx, workers=None, on_done=None):
        self.ctx = ctx
        # The standard library's pool: its idle workers leave at once when
        # it shuts down, so a stop does not wait for their idle timeout.
        self._executor = futures.ThreadPoolExecutor(
            max_workers=workers or ctx.conf.launcher.workers,
            thread_name_prefix='fleetflow-flow')
        self._runs = {}
        self._woken = collections.deque()
        self._new = collections.deque()
        self._lock = threading.Lock()
        self._stopping = False
        self._on_done = on_done
        #: how many times a flow was parked
        self.parks = 0

    # Starting flows

    def launch(self, node):
        """Start the launch flow of a building node row."""
        provider = self.ctx.layout.providers[node['provider']]
        label = self.ctx.layout.pool_label(
            self.ctx.layout.get_pool(node['provider'], node['pool']),
            node['label'])
        return self.start_flow(
            node['id'], launch_flows.get_launch_flow,
            dict(node_id=node['id'], provider=node['provider'],
                 pool=node['pool'], label=node['label'],
                 launch_retries=provider['launch-retries'],
                 launch_timeout=provider['launch-timeout'],
                 boot_timeout=provider['boot-timeout'],
                 host_key_checking=label['host-key-checking']))

    def delete(self, node):
        """Start the delete flow of a node row."""
        return self.start_flow(
            node['id'], delete_flows.get_delete_flow,
            dict(node_id=node['id'], provider=node['provider'],
                 delete_timeout=self.ctx.conf.launcher.delete_timeout))

    def start_flow(self, node_id, factory, inputs):
        """Run a new flow of ``factory(**inputs)``, recorded first."""
        return self._start(node_id, factory.__name__,
                           lambda: self._record(node_id, factory, inputs))

    def _record(self, node_id, factory, inputs):
        """Record the flow in the node's logbook and load its engine."""
        flow, detail, book = self.record_flow(node_id, factory, inputs)
        return engines.load(flow, flow_detail=detail, book=book,
                            backend=self.ctx.persistence,
                            engine=ff_engine.NAME)

    def record_flow(self, node_id, factory, inputs):
        """Save a new flow detail of ``factory(**inputs)`` in the logbook.

        The detail holds the factory and its inputs, so that any process
        can rebuild the flow; the node row points at it (``flow_id``).
        The node's finished flows but the :data:`FLOWS_KEPT` newest are
        removed (SQL persistence).

        :returns: ``(flow, flow detail, logbook)``
        """
        if inputs.get('node_id') != node_id:
            raise registry.UntrustedFlow('inputs for node %s name node %s'
                                         % (node_id, inputs.get('node_id')))
        flow, detail = registry.record(factory, inputs)
        # The inputs are the flow's store; saved with the detail in one
        # transaction, a crash cannot leave a flow that lacks them.
        detail.add(_injector(inputs))
        for atom_detail in ff_engine.atom_details(flow):
            detail.add(atom_detail)
        store = self.ctx.store
        # A new logbook object: saving it adds to the node's book, if any.
        book = tf_models.LogBook('node-%s' % node_id, uuid=node_id)
        with contextlib.closing(self.ctx.persistence.get_connection()) \
                as conn:
            add_flow = getattr(conn, 'add_flow', None)
            if add_flow is not None:
                # The node store shares the flows' database: one transaction.
                add_flow(book, detail, also=lambda tx: store.update_node(
                    node_id, tx=tx, flow_id=detail.uuid), keep=FLOWS_KEPT)
                return flow, detail, book
            book.add(detail)
            conn.save_logbook(book)
        store.update_node(node_id, flow_id=detail.uuid)
        return flow, detail, book

    def resume_all(self):
        """Resume every flow that did not finish; return how many."""
        resumed = 0
        with contextlib.closing(self.ctx.persistence.get_connection()) \
                as conn:
            books = list(conn.get_logbooks(lazy=False))
        for book in books:
            unfinished = [fd for fd in book if fd.state not in FINISHED]
            if not unfinished:
                if self.ctx.store.find_node(book.uuid) is None:
                    self._forget(book.uuid)
                continue
            for detail in unfinished:
                LOG.info('[node %s] Resuming flow %s (%s)', book.uuid,
                         detail.name, detail.state)
                try:
                    # Checked now, so that a refused flow is not started.
                    registry.recorded(detail, book.uuid)
                    self._start(book.uuid, detail.name, functools.partial(
                        load_engine, self.ctx, book, detail))
                except exceptions.FleetflowError as e:
                    # One node's bad logbook must not stop the others.
                    LOG.error('[node %s] Flow %s not resumed: %s',
                              book.uuid, detail.name, e)
                    continue
                resumed += 1
        return resumed

    def _start(self, node_id, name, load):
        run = FlowRun(node_id, name, load)
        with self._lock:
            if node_id in self._runs:
                raise exceptions.FleetflowError(
                    'node %s already has a flow running' % node_id)
            self._runs[node_id] = run
        self._submit(run)
        return run

    # Running, parking, waking

    def _submit(self, run, woken=False):
        """Queue ``run`` for a worker; woken flows go before new ones.

        A woken flow is near its end (its instance changed, or its time to
        try again came): finishing it first serves its request sooner,
        where new flows would each take a turn before any is done.
        """
        with self._lock:
            (self._woken if woken else self._new).append(run)
            self.ctx.worker_backlog += 1
        self._executor.submit(self._run_next)

    def _run_next(self):
        with self._lock:
            queue = self._woken or self._new
            run = queue.popleft()
            self.ctx.worker_backlog -= 1
        self._run(run)

    def _run(self, run):
        run.park = run.recheck = None
        if self._stopping:
            self._finish(run, states.SUSPENDED)
            return
        try:
            if run.engine is None:
                engine = run.load()
                # stop() may suspend it from now on: only a compiled
                # engine can be.
                engine.compile()
                run.engine = engine
                run.flow_id = run.engine.storage.flow_uuid
                run.name = run.engine.storage.flow_name
                # Without a backlog, a poll itself waits a little for a
                # quick cloud, which costs less than parking the flow.
                OnWait(run.engine, functools.partial(self._park_run, run),
                       lambda: self.ctx.worker_backlog).register()
                listen(run.engine, self.ctx)
                if self._stopping:
                    # The stop came while it loaded: resumed at next start.
                    self._finish(run, states.SUSPENDED)
                    return
            run.engine.run()
        except Exception as e:
            run.error = e
        if run.engine is None:
            self._finish(run, states.FAILURE)
            return
        state = run.engine.storage.get_flow_state()
        if state == states.SUSPENDED and run.park is not None \
                and not self._stopping:
            self._park(run, run.park)
            return
        self._finish(run, state)

    def _park_run(self, run, reason, recheck):
        """Suspend ``run``'s engine; it is parked when it has stopped."""
        run.park = reason
        run.recheck = recheck
        run.engine.suspend()

    def _park(self, run, reason):
        with self._lock:
            generation = run.generation
            self.parks += 1

        def wake():
            self._wake(run, generation)

        if getattr(reason, 'external_id', None) and reason.provider:
            run.watch = self.ctx.provider(reason.provider).cache.watch(
                reason.external_id, reason.seen_state, wake)
        wake_at = getattr(reason, 'wake_at', None) or reason.retry_at
        self.ctx.scheduler.call_at(wake_at, wake)

    def _wake(self, run, generation):
        with self._lock:
            if run.generation != generation or self._stopping:
                return
            run.generation += 1
        if run.watch is not None:
            run.watch.cancel()
            run.watch = None
        # A flow parked before its poll is parked again, its engine not
        # run, while the poll would still only find that it must wait.
        reason = None
        if run.recheck is not None:
            try:
                reason = run.recheck()
            except Exception:
                LOG.exception('[node %s] Asking whether flow %s must still '
                              'wait failed; running it', run.node_id,
                              run.name)
        if reason is not None:
            self._park(run, reason)
            return
        self._submit(run, woken=True)

    def _finish(self, run, state):
        run.state = state
        with self._lock:
            self._runs.pop(run.node_id, None)
        if state in FINISHED and self.ctx.store.find_node(run.node_id) is None:
            self._forget(run.node_id)
        if run.error is not None and state != states.SUSPENDED:
            logutils.node_logger(LOG, run.node_id).info(
                'Flow %s ended %s: %s', run.name, state, run.error)
        run.done.set()
        if self._on_done is not None and state in FINISHED:
            self._on_done(run)

    def _forget(self, node_id):
        with contextlib.closing(
                self.ctx.persistence.get_connection()) as conn:
            with contextlib.suppress(Exception):
                conn.destroy_logbook(node_id)

    # Looking and stopping

    def is_running(self, node_id):
        with self._lock:
            return node_id in self._runs

    def running(self):
        with self._lock:
            return len(self._runs)

    def stop(self, timeout=None):
        """Stop at task boundaries; unfinished flows resume at next start."""
        with self._lock:
            self._stopping = True
            runs = list(self._runs.values())
        for run in runs:
            if run.engine is not None:
                run.engine.suspend()
        self.ctx.stop_waits()
        self._executor.shutdown(wait=True)
        with self._lock:
            for run in runs:
                run.done.set()
            self._runs.clear()
