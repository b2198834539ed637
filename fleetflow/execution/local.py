"""Runs flows in this process, on a bounded pool of workers.

Every flow has a flow detail in its node's logbook (the logbook's uuid is
the node's id), with the factory and inputs that rebuild it, so that a
process that starts again resumes every flow that did not finish. Only
one launcher may run a database's flows this way (its owner lock).

A flow that waits holds no worker: when it must wait
(:mod:`fleetflow.execution.waits`), its engine is suspended at the next
task boundary and parked; it is queued again, before new flows, when it
is woken.
"""

import collections
from concurrent import futures
import functools
import logging
import threading

from taskflow import states

from fleetflow.execution import base
from fleetflow.execution import waits
from fleetflow import logutils

LOG = logging.getLogger(__name__)


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
        self.state = None
        self.error = None
        self.done = threading.Event()


class LocalRunner(base.HostRunner):
    """Runs, parks and resumes flows; one flow per node at a time."""

    def __init__(self, ctx, workers=None, on_done=None):
        super().__init__(ctx, on_done=on_done)
        # The standard library's pool: its idle workers leave at once when
        # it shuts down, so a stop does not wait for their idle timeout.
        self._executor = futures.ThreadPoolExecutor(
            max_workers=workers or ctx.conf.launcher.workers,
            thread_name_prefix='fleetflow-flow')
        self._waits = waits.Waits(ctx)
        self._woken = collections.deque()
        self._new = collections.deque()
        self._stopping = False

    # Starting flows

    def start_flow(self, node_id, kind, inputs):
        """Run a new flow of ``kind`` with ``inputs``, recorded first."""
        return self._start(node_id, '%s-%s' % (kind, node_id),
                           lambda: self._record(node_id, kind, inputs))

    def _record(self, node_id, kind, inputs):
        """Record the flow in the node's logbook and load its engine."""
        flow, detail, book = self.record_flow(node_id, kind, inputs)
        return base.load_engine(self.ctx, book, detail, flow=flow)

    def resume(self, book, detail):
        self._start(book.uuid, detail.name, functools.partial(
            base.load_engine, self.ctx, book, detail))

    def _start(self, node_id, name, load):
        run = FlowRun(node_id, name, load)
        with self._lock:
            self._claim(node_id, run)
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
                waits.OnWait(run.engine, functools.partial(self._park_run,
                                                           run),
                             lambda: self.ctx.worker_backlog).register()
                base.listen(run.engine, self.ctx)
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
            self._park(run)
            return
        self._finish(run, state)

    def _park_run(self, run, reason, recheck):
        """Suspend ``run``'s engine; it is parked when it has stopped."""
        run.park = reason
        run.recheck = recheck
        run.engine.suspend()

    def _park(self, run):
        with self._lock:
            self.parks += 1
        # Woken once (:class:`~fleetflow.execution.waits.Parked`).
        self._waits.park(run.park, run.recheck,
                         functools.partial(self._wake, run),
                         label='[node %s] ' % run.node_id)

    def _wake(self, run):
        if not self._stopping:
            self._submit(run, woken=True)

    def _finish(self, run, state):
        run.state = state
        with self._lock:
            self._runs.pop(run.node_id, None)
        if state in base.FINISHED \
                and self.ctx.store.find_node(run.node_id) is None:
            base.forget_logbook(self.ctx, run.node_id)
        if run.error is not None and state != states.SUSPENDED:
            logutils.node_logger(LOG, run.node_id).info(
                'Flow %s ended %s: %s', run.name, state, run.error)
        run.done.set()
        if self.on_done is not None and state in base.FINISHED:
            self.on_done(run)

    # Stopping

    def stop(self, timeout=None):
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
