"""Posting flows on the jobboard: the launcher's side of a fleet.

One flow per node, across hosts
    Launcher passes take turns on a database lock
    (:class:`fleetflow.db.locks.PassLock`) and read the board at the start
    of their turn: a node whose job is on the board (claimed or not) has
    a flow. A launcher that starts a flow for a node first looks for an
    unfinished flow detail in the node's logbook (one whose job never got
    posted, or was lost with the board's data) and posts that one again
    instead of recording another, so two flows of one node never run at
    once.

Several launchers look after every node and request together: any of
them settles any pending request and launches any building node that has
no job, so what a dead launcher left half done is finished by the others.
"""

import contextlib
import logging
import threading

from taskflow import exceptions as tf_exceptions

from fleetflow import exceptions
from fleetflow.execution import base
from fleetflow.execution import board as ff_board
from fleetflow.flows import registry
from fleetflow import logutils
from fleetflow import scheduler as ff_scheduler

LOG = logging.getLogger(__name__)

#: Seconds between two looks at the board's size by a launcher (a job
#: that went means a flow finished: the launcher passes at once).
BOARD_WATCH = 0.5


class JobboardRunner(base.FlowRunner):
    """Posts flows as jobs, for conductors to run.

    It records each flow as the in-process runner does (:meth:`~fleetflow.
    execution.base.FlowRunner.record_flow`), then posts its job. A node
    "is running" while a job of it is on the board: :meth:`refresh` reads
    the board at the start of each launcher pass, under the pass lock
    (:meth:`pass_turn`).

    :param lock: the launchers' :class:`~fleetflow.db.locks.PassLock`.
    """

    fleet_wide = True

    def __init__(self, ctx, board, lock=None, on_done=None):
        super().__init__(ctx, on_done=on_done)
        self.board = board
        self.lock = lock
        self._jobs = None
        self._jobs_lock = threading.Lock()
        self._watcher = None
        self._job_count = None

    @contextlib.contextmanager
    def pass_turn(self):
        """Take the launchers' turn, and read the board."""
        with self._hold():
            self.refresh()
            yield

    def _hold(self):
        return self.lock.hold() if self.lock is not None \
            else contextlib.nullcontext()

    def start(self):
        """Watch the board, to pass again as soon as a job is done."""
        if self.on_done is not None and self._watcher is None:
            self._watcher = ff_scheduler.Scheduler()
            self._watcher.add_periodic(self._watch, BOARD_WATCH)
            self._watcher.start()

    def _watch(self):
        """Wake the launcher when the board holds fewer jobs than before."""
        try:
            count = self.board.jobboard.job_count
        except Exception:
            return
        if self._job_count is not None and count < self._job_count:
            self.on_done(None)
        self._job_count = count

    def refresh(self):
        """Read which nodes have a job on the board."""
        jobs = {}
        for job in self.board.jobs(fresh=True):
            node_id = ff_board.job_node(job)
            if node_id:
                jobs[node_id] = job.uuid
        with self._jobs_lock:
            self._jobs = jobs
        return jobs

    def start_flow(self, node_id, kind, inputs):
        """Post the node's unfinished flow again, or a new one."""
        if self._jobs is None:
            self.refresh()
        with self._jobs_lock:
            if node_id in self._jobs:
                raise exceptions.FleetflowError(
                    'node %s already has a flow running' % node_id)
        book, detail = self._unfinished(node_id)
        log = logutils.node_logger(LOG, node_id)
        if detail is not None and not self._applies(node_id, detail):
            # Another run finished the node's flow meanwhile (a conductor
            # froze past its claim; its copy stopped unfinished): a
            # conductor would refuse that flow now, for ever.
            log.info('Flow %s did not finish, but no longer applies to '
                     'the node: a new %s flow', detail.name, kind)
            detail = None
        if detail is not None:
            log.info('Flow %s did not finish and has no job: posting it '
                     'again instead of a new %s flow', detail.name, kind)
        else:
            _flow, detail, book = self.record_flow(node_id, kind, inputs)
        return self._post(node_id, book, detail)

    def _applies(self, node_id, detail):
        """Whether the node is in a state its flow ``detail`` acts on."""
        with contextlib.closing(self.ctx.persistence.get_connection()) \
                as conn:
            detail = conn.get_logbook(node_id).find(detail.uuid)
        node = self.ctx.store.find_node(node_id)
        try:
            factory, _inputs = registry.recorded(detail, node_id)
        except registry.UntrustedFlow:
            # Refused (and logged): a new flow is recorded instead.
            return False
        return node is not None and node['state'] in factory.node_states

    def _post(self, node_id, book, detail):
        job = self.board.post(node_id, book, detail)
        # A conductor, maybe on another host, writes the flow from now on.
        ff_board.forget_flow(self.ctx, detail.uuid)
        with self._jobs_lock:
            if self._jobs is not None:
                self._jobs[node_id] = job.uuid
        logutils.node_logger(LOG, node_id).debug(
            'Posted flow %s as job %s', detail.name, job.uuid)
        return job

    def _unfinished(self, node_id, on_board=()):
        """``(logbook, flow detail)`` of an unfinished flow of the node.

        The one the node row names first; ``(None, None)`` when every
        flow of the node finished.
        """
        backend = self.ctx.persistence
        with contextlib.closing(backend.get_connection()) as conn:
            try:
                details = list(conn.get_flows_for_book(node_id, lazy=True))
            except tf_exceptions.NotFound:
                return None, None
            unfinished = [d for d in details
                          if d.state not in base.FINISHED
                          and d.uuid not in on_board]
            if not unfinished:
                return None, None
            node = self.ctx.store.find_node(node_id) or {}
            unfinished.sort(key=lambda d: d.uuid != node.get('flow_id'))
            return conn.get_logbook(node_id, lazy=True), unfinished[0]

    def resume_all(self):
        """Post the flows that did not finish and have no job.

        Their jobs are normally still on the board (a job leaves it only
        when its flow is done); this finds those whose poster died before
        posting, or whose job the board lost. Returns how many.
        """
        posted = 0
        with self._hold():
            self.refresh()
            on_board = {(job.details or {}).get('flow_uuid')
                        for job in self.board.jobs(fresh=False)}
            with contextlib.closing(
                    self.ctx.persistence.get_connection()) as conn:
                books = [book.uuid for book in conn.get_logbooks(lazy=True)]
            for node_id in books:
                if self.is_running(node_id):
                    continue
                book, detail = self._unfinished(node_id, on_board)
                if detail is None:
                    if self.ctx.store.find_node(node_id) is None:
                        base.forget_logbook(self.ctx, node_id)
                    continue
                LOG.info('[node %s] Posting unfinished flow %s (%s) again',
                         node_id, detail.name, detail.state)
                self._post(node_id, book, detail)
                posted += 1
        return posted

    def is_running(self, node_id):
        with self._jobs_lock:
            return bool(self._jobs) and node_id in self._jobs

    def running(self):
        """Jobs on the board at the last look (every host's)."""
        with self._jobs_lock:
            return len(self._jobs or ())

    def stop(self, timeout=None):
        if self._watcher is not None:
            self._watcher.stop()
