"""Conductors: claim the fleet's jobs, check them, and run their flows.

Jobs are not trusted
    Whoever can write to the board can post or change a job. A conductor
    runs a job only when the database agrees with it (:func:`check_job`):
    its logbook is its node's, its flow detail is that node's current
    flow (the node row's ``flow_id``), unfinished, rebuilt by fleetflow's
    registry of flow factories (:mod:`fleetflow.flows.registry`), and the
    node is in a state that flow acts on. The flow's inputs are those
    saved with its flow detail: a ``store`` in a job is ignored. Any other
    job is refused, logged as a SECURITY event and trashed.

Claims and dead hosts
    A claim must outlive every wait of its flow, and die with its host.
    On ZooKeeper a claim is an ephemeral node of the conductor's session,
    whose timeout is ``claim_expiry``. On Redis a claim is a key with a TTL
    of ``claim_expiry`` (TaskFlow's conductor claims without one, and
    such a claim outlives its host forever): the conductor here claims
    with the TTL and renews it every third of it while the flow runs. A
    conductor checks that it still owns each job it runs; one whose claim
    was lost (its host stalled longer than the expiry) stops that flow at
    the next task boundary, since another conductor may have taken it. A
    flow also stops at a task boundary when its Redis claim was not
    renewed within the expiry (the host ran again after a stall, before
    its check). A conductor claims no job of a node whose flow it still runs
    (a claim that expired leaves the job on the board while the flow
    runs), so one process never runs a node's flow twice at once.
    When a host dies, its claims expire and other conductors claim the
    jobs and resume the flows where the dead host's last saved task left
    them.

Waiting flows
    The in-process runner parks a waiting flow by suspending its engine.
    A conductor cannot: a suspended job is abandoned, goes back on the
    board and is claimed again at once. So a flow that waits (an instance
    not active yet, a rate limit) holds its conductor worker, blocked on
    the same wake-ups as the runner's parked flows
    (:meth:`fleetflow.execution.waits.Waits.wait_here`), and its claim is
    kept alive meanwhile; it stops waiting once its claim is lost or may
    have expired. A conductor claims no more jobs than it has workers
    (``conductor_workers``), so at most that many flows, waiting ones
    included, run on one host; the rest stay unclaimed on the board for
    other hosts (the bound is per host: the fleet runs ``hosts x
    conductor_workers`` flows at once). A conductor that stops (or loses
    a claim) suspends a waiting flow where the runner parks one, at its
    failed poll, and gives the job back to the board.
"""

import contextlib
import functools
import logging
import threading
import time
import uuid

from taskflow import exceptions as tf_exceptions
import tenacity

from fleetflow import exceptions
from fleetflow.execution import base
from fleetflow.execution import board as ff_board
from fleetflow.execution import taskflow_overrides
from fleetflow.execution import waits
from fleetflow.flows import registry
from fleetflow import logutils
from fleetflow import scheduler as ff_scheduler

LOG = logging.getLogger(__name__)

#: Seconds a conductor waits for a job to appear before looking again.
CONDUCTOR_WAIT = 0.5


class FlowDone(exceptions.FleetflowError):
    """The job's flow finished already: its job is consumed, not run."""


def check_job(ctx, job):
    """``(logbook, flow detail)`` of a job that the database agrees with.

    :raises FlowDone: when the job's flow is its node's and finished (a
        conductor finished it, then died before consuming the job).
    :raises UntrustedFlow: for any other job the database does not agree
        with; logged as a SECURITY event.
    """
    details = job.details if isinstance(job.details, dict) else {}
    node_id, flow_uuid = details.get('node_id'), details.get('flow_uuid')
    if not isinstance(node_id, str) or not isinstance(flow_uuid, str):
        _refuse(job, 'it names no node or no flow')
    if job.book_uuid != node_id:
        _refuse(job, 'its logbook %s is not its node %s\'s'
                % (job.book_uuid, node_id))
    with contextlib.closing(ctx.persistence.get_connection()) as conn:
        try:
            book = conn.get_logbook(node_id)
        except tf_exceptions.NotFound:
            _refuse(job, 'node %s has no logbook' % node_id)
    detail = book.find(flow_uuid)
    if detail is None:
        _refuse(job, 'flow %s is not in node %s\'s logbook'
                % (flow_uuid, node_id))
    node = ctx.store.find_node(node_id)
    current = node is not None and node['flow_id'] == flow_uuid
    if detail.state in base.FINISHED and (current or node is None):
        raise FlowDone('flow %s of node %s ended %s'
                       % (flow_uuid, node_id, detail.state))
    if not current:
        _refuse(job, 'flow %s is not the current flow of node %s (%s)'
                % (flow_uuid, node_id,
                   'no such node' if node is None else node['flow_id']))
    factory, _inputs = registry.recorded(detail, node_id)
    if node['state'] not in factory.node_states:
        _refuse(job, 'node %s is %s; a %s flow acts on a node that is %s'
                % (node_id, node['state'], factory.kind,
                   ', '.join(sorted(factory.node_states))))
    return book, detail


def _refuse(job, reason):
    registry.SECURITY_LOG.error('SECURITY: job %s (%.80r) refused: %s',
                                job.uuid, job.name, reason)
    raise registry.UntrustedFlow('job %s refused: %s' % (job.uuid, reason))


class _Claim:
    def __init__(self, job, expiry, since):
        self.job = job
        self.engine = None
        self.lost = False
        self.expiry = expiry
        #: when the claim was last known held (``time.monotonic()``)
        self.held_at = since

    def stale(self):
        """Whether the claim may have expired: not renewed in time."""
        return time.monotonic() - self.held_at > self.expiry


class _ClaimCheck(taskflow_overrides.Listener):
    """Stops a flow at a task boundary once its Redis claim may have expired.

    The keeper notices a lost claim at its next look; a host that stalled
    past the expiry (stopped, starved) runs its flows on at once, so each
    task boundary checks that the claim was renewed within the expiry.
    """

    def __init__(self, engine, claim):
        super().__init__(engine, flow_listen_for=())
        self._claim = claim
        self._stopped = False

    def expired(self):
        """Whether the claim may have expired (logged once)."""
        if not self._stopped and self._claim.stale():
            self._stopped = True
            job = self._claim.job
            logutils.node_logger(LOG, ff_board.job_node(job)).error(
                'The claim on job %s (flow %s) was not renewed for over '
                '%ss: stopping the flow here, another conductor may run it',
                job.uuid, job.name, self._claim.expiry)
        return self._stopped

    def _check(self, state, details):
        if not self._stopped and self.expired():
            self.engine.suspend()

    on_task = on_retry = _check


class _ClaimKeeper:
    """Renews the claims a conductor holds; notices the ones it lost.

    It also gives back the jobs that could not be (the board was out of
    reach): a ZooKeeper claim outlives a lost connection while the
    session lasts, and its job would stay claimed, never run again.
    """

    def __init__(self, board, who, on_lost):
        self.board = board
        self.who = who
        self.interval = max(0.2, board.claim_expiry / 3.0)
        self._on_lost = on_lost
        self._held = {}
        self._unfinished = {}
        self._lock = threading.Lock()
        self._scheduler = ff_scheduler.Scheduler()
        self._scheduler.add_periodic(self.renew, self.interval)

    def start(self):
        self._scheduler.start()

    def stop(self):
        self._scheduler.stop()

    def add(self, job, since):
        """Keep the claim on ``job``, made at ``since`` (monotonic)."""
        with self._lock:
            self._held[job.uuid] = _Claim(job, self.board.claim_expiry,
                                          since)

    def attach(self, job, engine):
        """The claim on ``job``, now run by ``engine`` (None if lost)."""
        with self._lock:
            claim = self._held.get(job.uuid)
            if claim is not None:
                claim.engine = engine
            return claim

    def discard(self, job):
        with self._lock:
            self._held.pop(job.uuid, None)

    def finish_later(self, job, give_back):
        """Call ``give_back()`` at a next look, while ``job`` is ours."""
        with self._lock:
            self._unfinished[job.uuid] = (job, give_back)

    def _finish(self):
        with self._lock:
            unfinished = list(self._unfinished.values())
        for job, give_back in unfinished:
            try:
                if self.board.owner(job) == self.who:
                    give_back()
            except tf_exceptions.NotFound:
                pass
            except Exception as e:
                LOG.warning('Cannot give job %s back yet: %s', job.uuid, e)
                continue
            with self._lock:
                self._unfinished.pop(job.uuid, None)

    def count(self):
        with self._lock:
            return len(self._held)

    def renew(self):
        """Renew every claim held; hand the lost ones to ``on_lost``."""
        self._finish()
        with self._lock:
            claims = list(self._held.values())
        for claim in claims:
            asked = time.monotonic()
            try:
                owner = self.board.owner(claim.job)
            except Exception as e:
                LOG.warning('Cannot check the claim on job %s: %s',
                            claim.job.uuid, e)
                continue
            with self._lock:
                if self._held.get(claim.job.uuid) is not claim:
                    continue
                if owner != self.who:
                    del self._held[claim.job.uuid]
            if owner != self.who:
                self._on_lost(claim, owner)
                continue
            if self.board.backend == 'redis':
                try:
                    if claim.job.extend_expiry(self.board.claim_expiry):
                        claim.held_at = asked
                except Exception as e:
                    LOG.warning('Cannot renew the claim on job %s: %s',
                                claim.job.uuid, e)


def _job_key(job):
    """What one process runs one of at a time: a node's flow, or a job."""
    details = job.details if isinstance(job.details, dict) else {}
    node_id = details.get('node_id')
    return node_id if isinstance(node_id, str) else job.uuid


class _ClaimingBoard:
    """The board as the conductor uses it: claims that are kept alive.

    TaskFlow's conductor claims with no expiry; on Redis this claims with
    ``claim_expiry`` and hands the claim to the keeper, which renews it
    until the job is consumed, abandoned or trashed.

    A job whose node has a flow running here is not claimed: a claim that
    expired while its flow ran (the host stalled) leaves the job on the
    board, and TaskFlow's conductor would run it a second time beside the
    first. It is claimed again once that flow stopped and its job was
    given back (every claimed job ends consumed, abandoned or trashed).
    """

    def __init__(self, board, keeper, on_claim=None):
        self._board = board
        self._jobboard = board.jobboard
        self._keeper = keeper
        self._on_claim = on_claim
        self._running = set()
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._jobboard, name)

    def claim(self, job, who):
        key = _job_key(job)
        with self._lock:
            if key in self._running:
                raise tf_exceptions.UnclaimableJob(
                    'job %s: a flow of node %s still runs here'
                    % (job.uuid, key))
            self._running.add(key)
        since = time.monotonic()
        try:
            if self._board.backend == 'redis':
                self._jobboard.claim(job, who,
                                     expiry=self._board.claim_expiry)
            else:
                self._jobboard.claim(job, who)
        except BaseException:
            self._ended(job)
            raise
        self._keeper.add(job, since)
        if self._on_claim is not None:
            self._on_claim(job)

    def _ended(self, job):
        with self._lock:
            self._running.discard(_job_key(job))

    def _give_back(self, give_back, job, who):
        self._keeper.discard(job)
        try:
            return give_back(job, who)
        except tf_exceptions.JobFailure:
            self._keeper.finish_later(job, functools.partial(give_back, job,
                                                             who))
            raise
        finally:
            self._ended(job)

    def consume(self, job, who):
        return self._give_back(self._jobboard.consume, job, who)

    def abandon(self, job, who):
        return self._give_back(self._jobboard.abandon, job, who)

    def trash(self, job, who):
        return self._give_back(self._jobboard.trash, job, who)


class Conductor:
    """Claims jobs from the board and runs their flows.

    TaskFlow's ``nonblocking`` conductor (``blocking`` with one worker)
    with fleetflow's check of each job (:func:`check_job`), named after
    the host and a token of this process (a claim names its owner: a
    restarted process must not pass for its dead predecessor).

    :param on_done: called with the job of each flow that finished.
    """

    #: database transactions of processes it started (it starts none)
    transactions = 0

    def __init__(self, ctx, board, on_done=None):
        self.ctx = ctx
        self.board = board
        self.name = '%s-%s' % (ctx.conf.host, uuid.uuid4().hex[:6])
        self.workers = ctx.conf.jobboard.conductor_workers
        self._on_done = on_done
        self._waits = waits.Waits(ctx)
        #: how many times a flow waited
        self.parks = 0
        self._claims = _ClaimKeeper(board, self.name, self._lost)
        conductor_class = taskflow_overrides.NonBlockingConductor \
            if self.workers > 1 else taskflow_overrides.BlockingConductor
        self._conductor = conductor_class(
            self._load_job, FlowDone, self._not_run, self.name,
            _ClaimingBoard(board, self._claims, self._claimed),
            persistence=ctx.persistence, engine=taskflow_overrides.NAME,
            max_simultaneous_jobs=self.workers,
            wait_timeout=CONDUCTOR_WAIT)
        notifier = self._conductor.notifier
        notifier.register('compilation_start', self._on_start)
        notifier.register('job_consumed', self._on_consumed)
        notifier.register('job_abandoned', self._on_abandoned)
        self._stopping = threading.Event()
        self._thread = None

    def start(self):
        self._claims.start()
        self._thread = threading.Thread(target=self._run,
                                        name='fleetflow-conductor',
                                        daemon=True)
        self._thread.start()
        LOG.info('Conductor %s started: %d workers, claims expire after '
                 '%ss', self.name, self.workers, self.board.claim_expiry)

    def _run(self):
        """Run TaskFlow's conductor; start it again if it fails."""
        try:
            tenacity.Retrying(
                retry=tenacity.retry_if_exception_type(),
                stop=lambda state: self._stopping.is_set(),
                wait=tenacity.wait_fixed(1.0), sleep=self._stopping.wait,
                before_sleep=lambda state: LOG.error(
                    'Conductor %s failed; starting it again', self.name,
                    exc_info=state.outcome.exception()),
            )(self._conductor.run)
        except tenacity.RetryError:
            pass

    def stop(self, timeout=None):
        """Stop claiming; running flows stop at a task boundary.

        Their jobs are abandoned: another conductor resumes them.
        """
        self._stopping.set()
        self._waits.stop()
        self.ctx.stop_waits()
        self._conductor.stop()
        if self._thread is not None:
            self._thread.join(timeout)
        self._claims.stop()
        LOG.info('Conductor %s stopped', self.name)

    def running(self):
        """Jobs this conductor holds a claim on."""
        return self._claims.count()

    def waiting(self):
        """Flows of this conductor that wait (each holds its worker)."""
        return self._waits.waiting_here()

    def _wait(self, engine, claim, check, reason, recheck):
        """A flow waits holding its worker (a claim cannot be parked).

        It stops waiting once its claim is lost, or may have expired.
        """
        self.parks += 1

        def gone():
            return (claim is not None and claim.lost) or (
                check is not None and check.expired())

        if not self._waits.wait_here(id(engine), reason, recheck, gone):
            # Stop where the in-process runner parks a flow: at the
            # failed poll, before its retry controller decides, or
            # before the poll.
            engine.suspend()

    def _claimed(self, job):
        # Other hosts may have run the flow since this one last did.
        flow_uuid = (job.details or {}).get('flow_uuid')
        if flow_uuid:
            ff_board.forget_flow(self.ctx, flow_uuid)

    def _load_job(self, job):
        book, detail = check_job(self.ctx, job)
        return base.load_engine(self.ctx, book, detail)

    def _not_run(self, job, why):
        logutils.node_logger(LOG, ff_board.job_node(job)).info(
            'Job %s not run: %s', job.uuid, why)

    # Conductor events

    def _on_start(self, event_type, details):
        job, engine = details['job'], details['engine']
        claim = self._claims.attach(job, engine)
        check = None
        if claim is not None and self.board.backend == 'redis':
            # A ZooKeeper claim lives as long as the session, which may
            # outlive a server restart that kept the keeper from looking.
            check = _ClaimCheck(engine, claim)
            check.register()
        waits.OnWait(engine, functools.partial(self._wait, engine, claim,
                                               check),
                     lambda: True).register()
        base.listen(engine, self.ctx)
        logutils.node_logger(LOG, ff_board.job_node(job)).info(
            'Running flow %s (job %s)', job.name, job.uuid)

    def _on_consumed(self, event_type, details):
        job = details['job']
        node_id = ff_board.job_node(job)
        logutils.node_logger(LOG, node_id).info(
            'Flow %s done (job %s)', job.name, job.uuid)
        if node_id and self.ctx.store.find_node(node_id) is None:
            base.forget_logbook(self.ctx, node_id)
        if self._on_done is not None:
            self._on_done(job)

    def _on_abandoned(self, event_type, details):
        job = details['job']
        logutils.node_logger(LOG, ff_board.job_node(job)).info(
            'Flow %s stopped; job %s is back on the board', job.name,
            job.uuid)

    def _lost(self, claim, owner):
        job = claim.job
        logutils.node_logger(LOG, ff_board.job_node(job)).error(
            'Lost the claim on job %s (flow %s; now owned by %s): stopping '
            'the flow here at the next task boundary', job.uuid, job.name,
            owner or 'nobody')
        claim.lost = True
        if claim.engine is not None:
            # Woken first: a flow that waits holds its storage, which
            # suspending it takes.
            self._waits.stop_one(id(claim.engine))
            claim.engine.suspend()
