"""Several launcher hosts on one fleet: TaskFlow jobboards and conductors.

With ``[jobboard] enabled``, flows are not run by the process that decides
them. A launcher records the flow detail in the node's logbook in the
shared database (as the in-process runner does, with the factory and
inputs that rebuild the flow) and posts a job on the fleet's jobboard
(Redis or ZooKeeper): the job names the flow detail (``flow_uuid``) and
the node (``node_id``, the logbook's uuid). Conductors (TaskFlow's own,
:mod:`taskflow.conductors`, with fleetflow's check of each job) on any
host claim jobs, load the flow from its flow detail and run it; a job is
consumed when its flow has finished.

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
    flow also stops at a task boundary when its claim was not renewed
    within the expiry (the host ran again after a stall, before its
    check). A conductor claims no job of a node whose flow it still runs
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
    the same wake-ups as the runner's parked flows (the provider's shared
    instance listing, or its time to try again), and its claim is kept
    alive meanwhile. A conductor claims no more jobs than it has workers
    (``conductor_workers``), so at most that many flows, waiting ones
    included, run on one host; the rest stay unclaimed on the board for
    other hosts (the bound is per host: the fleet runs ``hosts x
    conductor_workers`` flows at once). A conductor that stops (or loses
    a claim) suspends a waiting flow where the runner parks one, at its
    failed poll, and gives the job back to the board.

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

A flow moves between processes (recorded by one, run by another, taken
over by a third), so the persistence connection is told to forget what
it remembers writing of a flow when the flow is posted and when it is
claimed.
"""

import contextlib
import functools
import logging
import re
import threading
import time
import uuid

from oslo_utils import netutils
from taskflow.conductors.backends import impl_blocking
from taskflow.conductors.backends import impl_nonblocking
from taskflow import exceptions as tf_exceptions
from taskflow.jobs import backends as job_backends
from taskflow.listeners import base as listener_base
from taskflow import states
import tenacity

from fleetflow.db import locks
from fleetflow import engine as ff_engine
from fleetflow import exceptions
from fleetflow.flows import registry
from fleetflow import launcher as ff_launcher
from fleetflow import logutils
from fleetflow import runner as ff_runner
from fleetflow import scheduler as ff_scheduler

LOG = logging.getLogger(__name__)

REDIS_PORT = 6379
ZOOKEEPER_PORT = 2181
NAMESPACE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')

#: Seconds a conductor waits for a job to appear before looking again.
CONDUCTOR_WAIT = 0.5
#: Seconds between two looks at the board's size by a launcher (a job
#: that went means a flow finished: the launcher passes at once).
BOARD_WATCH = 0.5


# The board

def board_config(conf):
    """``(backend, options)`` of the TaskFlow jobboard ``conf`` names.

    :raises ConfigError: on options the backend cannot take.
    """
    jb = conf.jobboard
    if not NAMESPACE.match(jb.namespace or ''):
        raise exceptions.ConfigError(
            '[jobboard] namespace: %r: use letters, digits, "_", "." and '
            '"-"' % jb.namespace)
    if not jb.hosts:
        raise exceptions.ConfigError('[jobboard] hosts: no host given')
    if jb.backend == 'redis':
        if len(jb.hosts) != 1:
            raise exceptions.ConfigError(
                '[jobboard] hosts: Redis takes one host[:port], not %s'
                % ', '.join(jb.hosts))
        host, port = netutils.parse_host_port(jb.hosts[0],
                                              default_port=REDIS_PORT)
        options = {'host': host, 'port': port, 'namespace': jb.namespace,
                   'socket_timeout': float(min(10, jb.claim_expiry)),
                   'socket_connect_timeout': 5.0}
        if jb.username:
            options['username'] = jb.username
        if jb.password:
            options['password'] = jb.password
        if jb.tls:
            # The server's certificate must name the host.
            options.update(ssl=True, ssl_cert_reqs='required',
                           ssl_check_hostname=True)
            for option, name in (('ssl_ca_certs', 'tls_ca_file'),
                                 ('ssl_certfile', 'tls_cert_file'),
                                 ('ssl_keyfile', 'tls_key_file')):
                if jb[name]:
                    options[option] = jb[name]
        return 'redis', options
    if jb.tls and not jb.tls_ca_file:
        raise exceptions.ConfigError(
            '[jobboard] tls_ca_file: required with tls on ZooKeeper (the '
            'CA that signed the servers\' certificates; no other CA is '
            'trusted)')
    hosts = []
    for item in jb.hosts:
        host, port = netutils.parse_host_port(item,
                                              default_port=ZOOKEEPER_PORT)
        hosts.append('%s:%d' % (netutils.escape_ipv6(host), port))
    # TaskFlow keeps the trash and the conductors next to the jobs, named
    # by replacing the jobs' folder name in the path.
    path = '/fleetflow/%s/jobs' % jb.namespace
    if path.count('jobs') != 1:
        raise exceptions.ConfigError(
            '[jobboard] namespace: %r: a ZooKeeper namespace cannot '
            'contain "jobs"' % jb.namespace)
    # TaskFlow's version check asks the server with the "envi" four
    # letter word, which ZooKeeper 3.5 and later refuse unless allowed.
    return 'zookeeper', {'hosts': ','.join(hosts), 'path': path,
                         'timeout': float(jb.claim_expiry),
                         'check_compatible': False}


def _redis_client(options):
    """The Redis client (TaskFlow's), with the TLS options it would drop.

    TaskFlow passes on to redis-py only some options: not the hostname
    check.
    """
    from taskflow.utils import redis_utils
    return redis_utils.RedisClient(**{
        key: value for key, value in options.items()
        if key != 'namespace'})


def _kazoo_client(conf, options):
    """The ZooKeeper client: its session timeout is the claim expiry.

    With a user name, it authenticates with the digest scheme and creates
    every znode with an ACL that only that identity can use. With TLS,
    it checks that the server's certificate names the host, and trusts
    only the CA of ``tls_ca_file`` (:mod:`fleetflow.jobboard_tls`).
    """
    from kazoo import client as kazoo_client
    from kazoo import security

    from fleetflow import jobboard_tls
    jb = conf.jobboard
    kwargs = {'hosts': options['hosts'], 'timeout': options['timeout'],
              'logger': logging.getLogger(__name__ + '.kazoo')}
    if jb.username:
        kwargs['auth_data'] = [('digest', '%s:%s' % (jb.username,
                                                     jb.password or ''))]
        kwargs['default_acl'] = [security.make_digest_acl(
            jb.username, jb.password or '', all=True)]
    else:
        LOG.warning('[jobboard] username: not set; the jobboard\'s znodes '
                    'on ZooKeeper can be written by anyone who can reach '
                    'the servers')
    if jb.tls:
        kwargs.update(use_ssl=True, handler=jobboard_tls.TLSHandler(
            jb.tls_ca_file, jb.tls_cert_file, jb.tls_key_file))
    return kazoo_client.KazooClient(**kwargs)


def job_node(job):
    """The node id a job of fleetflow's is for (None for another job)."""
    return (job.details or {}).get('node_id')


class Board:
    """The fleet's jobboard, as :func:`taskflow.jobs.backends.fetch` makes it.

    :param persistence: the TaskFlow persistence backend that conductors
        load the jobs' logbooks from.
    """

    def __init__(self, conf, persistence=None):
        self.conf = conf
        self.backend, self.options = board_config(conf)
        self.claim_expiry = conf.jobboard.claim_expiry
        self.namespace = conf.jobboard.namespace
        kwargs = {'persistence': persistence}
        if self.backend == 'zookeeper':
            self._client = _kazoo_client(conf, self.options)
        else:
            self._client = _redis_client(self.options)
        kwargs['client'] = self._client
        self.jobboard = job_backends.fetch(
            'fleetflow-%s' % self.namespace,
            dict(self.options, board=self.backend), **kwargs)
        self._lock = threading.Lock()

    def connect(self):
        with self._lock:
            if not self.jobboard.connected:
                if self.backend == 'zookeeper':
                    self.jobboard.connect(timeout=max(10.0,
                                                      self.claim_expiry))
                else:
                    self.jobboard.connect()

    def close(self):
        with self._lock:
            if self.backend == 'zookeeper':
                # The board stops only a client of its own; tell it that
                # the session ends on purpose, or it warns of a lost one.
                self.jobboard._closing = True
            self.jobboard.close()
            with contextlib.suppress(Exception):
                if self.backend == 'zookeeper':
                    self._client.stop()
                self._client.close()

    def post(self, node_id, book, detail):
        """Post the job of flow ``detail`` of node ``node_id``.

        The flow's inputs are not in the job: they are saved with the flow
        detail, and a conductor takes them from there only.
        """
        return self.jobboard.post(
            detail.name, book=book,
            details={'flow_uuid': detail.uuid, 'node_id': node_id})

    def jobs(self, fresh=True):
        """The jobs on the board (claimed or not), oldest first."""
        # A job that left the board while it was listed has no creation
        # time: last, and never compared with a time.
        return sorted(self.jobboard.iterjobs(ensure_fresh=fresh),
                      key=lambda job: (job.created_on is None,
                                       job.created_on or 0))

    def owner(self, job):
        """Who claimed ``job``; None when nobody does (or it is gone)."""
        try:
            return self.jobboard.find_owner(job)
        except TypeError:
            # TaskFlow's Redis board fails to decode the owner of a job
            # that has none (ZooKeeper's says None).
            if self.backend != 'redis':
                raise
            return None

    def describe(self):
        """One dict per job: what ``fleetflow job list`` shows."""
        rows = []
        for job in self.jobs():
            try:
                state = job.state
                owner = None
                if state == states.CLAIMED:
                    owner = self.owner(job)
                    if owner is None:
                        # Consumed or abandoned since its state was read.
                        state = job.state
            except tf_exceptions.NotFound:
                continue
            if state == states.COMPLETE:
                continue
            details = job.details or {}
            rows.append({'uuid': job.uuid, 'name': job.name,
                         'node_id': details.get('node_id'),
                         'flow_uuid': details.get('flow_uuid'),
                         'state': state, 'owner': owner,
                         'created_on': job.created_on})
        return rows


# The launcher's side: post jobs instead of running flows

class JobboardRunner(ff_runner.Runner):
    """Posts flows as jobs; the launcher uses it as its runner.

    It records each flow as :class:`~fleetflow.runner.Runner` does (the
    same :meth:`~fleetflow.runner.Runner.record_flow`), then posts its job
    instead of running it. A node "is running" while a job of it is on the
    board: :meth:`refresh` reads the board, and the launcher calls it at
    the start of each pass, under the pass lock.
    """

    def __init__(self, ctx, board, lock=None, on_done=None):
        super().__init__(ctx, workers=1, on_done=on_done)
        self.board = board
        self.lock = lock
        self._jobs = None
        self._jobs_lock = threading.Lock()
        self._watcher = None
        self._job_count = None

    def start(self):
        """Watch the board, to pass again as soon as a job is done."""
        if self._on_done is not None and self._watcher is None:
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
            self._on_done(None)
        self._job_count = count

    def refresh(self):
        """Read which nodes have a job on the board."""
        jobs = {}
        for job in self.board.jobs(fresh=True):
            node_id = job_node(job)
            if node_id:
                jobs[node_id] = job.uuid
        with self._jobs_lock:
            self._jobs = jobs
        return jobs

    def start_flow(self, node_id, factory, inputs):
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
                     'the node: a new %s', detail.name, factory.__name__)
            detail = None
        if detail is not None:
            log.info('Flow %s did not finish and has no job: posting it '
                     'again instead of a new %s', detail.name,
                     factory.__name__)
        else:
            _flow, detail, book = self.record_flow(node_id, factory, inputs)
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
        forget_flow(self.ctx, detail.uuid)
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
                          if d.state not in ff_runner.FINISHED
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
        lock = self.lock.hold() if self.lock is not None \
            else contextlib.nullcontext()
        posted = 0
        with lock:
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
                        self._forget(node_id)
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
        super().stop(timeout)


def forget_flow(ctx, flow_uuid):
    """Make the persistence connection forget what it wrote of a flow.

    The SQL connection remembers the atoms it wrote to save writes; once
    the flow is run elsewhere, what it remembers is wrong.
    """
    with contextlib.closing(ctx.persistence.get_connection()) as conn:
        forget = getattr(conn, 'forget_flow', None)
        if forget is not None:
            forget(flow_uuid)


# The conductor's side: claim jobs and run them

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
    if detail.state in ff_runner.FINISHED and (current or node is None):
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


class _CheckedJobs:
    """TaskFlow's conductor, running only the jobs :func:`check_job` passes.

    It replaces TaskFlow's engine-from-job, which imports the factory a
    flow detail names and merges a job's ``store`` over the flow's inputs.
    A refused job is trashed; a job whose flow is done, consumed.
    """

    def __init__(self, ctx, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._ctx = ctx

    def _engine_from_job(self, job):
        book, detail = check_job(self._ctx, job)
        return ff_runner.load_engine(self._ctx, book, detail)

    def _dispatch_job(self, job):
        try:
            return super()._dispatch_job(job)
        except FlowDone as e:
            logutils.node_logger(LOG, job_node(job)).info(
                'Job %s not run: %s', job.uuid, e)
            return True


class BlockingConductor(_CheckedJobs, impl_blocking.BlockingConductor):
    """TaskFlow's ``blocking`` conductor with fleetflow's job check."""


class NonBlockingConductor(_CheckedJobs,
                           impl_nonblocking.NonBlockingConductor):
    """TaskFlow's ``nonblocking`` conductor with fleetflow's job check."""


class _Wait:
    def __init__(self):
        self.event = threading.Event()
        self.go_on = True


class _Waits:
    """Flows of a conductor that wait, each holding its worker."""

    def __init__(self, ctx):
        self.ctx = ctx
        self._lock = threading.Lock()
        self._waits = {}
        self._stopping = False

    def wait(self, engine, reason):
        """Until the instance changes, or the time to try again comes.

        :returns: whether the flow goes on (False: the conductor stops,
            or lost the flow's claim).
        """
        wait = _Wait()
        event = wait.event
        with self._lock:
            if self._stopping:
                return False
            self._waits[id(engine)] = wait
        watch = None
        try:
            if getattr(reason, 'external_id', None) and \
                    getattr(reason, 'provider', None):
                watch = self.ctx.provider(reason.provider).cache.watch(
                    reason.external_id, reason.seen_state, event.set)
            wake_at = (getattr(reason, 'wake_at', None)
                       or getattr(reason, 'retry_at', None) or time.time())
            event.wait(max(0.0, wake_at - time.time()))
        finally:
            with self._lock:
                self._waits.pop(id(engine), None)
            if watch is not None:
                watch.cancel()
        return wait.go_on and not self._stopping

    def stop_one(self, engine):
        """Wake a waiting flow that must stop."""
        with self._lock:
            wait = self._waits.get(id(engine))
            if wait is not None:
                wait.go_on = False
        if wait is not None:
            wait.event.set()

    def stop(self):
        with self._lock:
            self._stopping = True
            waits = list(self._waits.values())
        for wait in waits:
            wait.event.set()

    def count(self):
        with self._lock:
            return len(self._waits)


class _Claim:
    def __init__(self, job, expiry, since):
        self.job = job
        self.engine = None
        self.expiry = expiry
        #: when the claim was last known held (``time.monotonic()``)
        self.held_at = since

    def stale(self):
        """Whether the claim may have expired: not renewed in time."""
        return time.monotonic() - self.held_at > self.expiry


class _ClaimCheck(listener_base.Listener):
    """Stops a flow at a task boundary once its claim may have expired.

    The keeper notices a lost claim at its next look; a host that stalled
    past the expiry (stopped, starved) runs its flows on at once, so each
    task boundary checks that the claim was renewed within the expiry.
    """

    def __init__(self, engine, claim):
        super().__init__(engine, flow_listen_for=())
        self._claim = claim
        self._stopped = False

    def _check(self, state, details):
        if self._stopped or not self._claim.stale():
            return
        self._stopped = True
        job = self._claim.job
        logutils.node_logger(LOG, job_node(job)).error(
            'The claim on job %s (flow %s) was not renewed for over %ss: '
            'stopping the flow here, another conductor may run it',
            job.uuid, job.name, self._claim.expiry)
        self._engine.suspend()

    _task_receiver = _retry_receiver = _check


class _ClaimKeeper:
    """Renews the claims a conductor holds; notices the ones it lost."""

    def __init__(self, board, who, on_lost):
        self.board = board
        self.who = who
        self.interval = max(0.2, board.claim_expiry / 3.0)
        self._on_lost = on_lost
        self._held = {}
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

    def count(self):
        with self._lock:
            return len(self._held)

    def renew(self):
        """Renew every claim held; hand the lost ones to ``on_lost``."""
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
            if self.board.backend != 'redis':
                # A ZooKeeper claim lives as long as the session.
                claim.held_at = asked
                continue
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

    def consume(self, job, who):
        self._keeper.discard(job)
        try:
            return self._jobboard.consume(job, who)
        finally:
            self._ended(job)

    def abandon(self, job, who):
        self._keeper.discard(job)
        try:
            return self._jobboard.abandon(job, who)
        finally:
            self._ended(job)

    def trash(self, job, who):
        self._keeper.discard(job)
        try:
            return self._jobboard.trash(job, who)
        finally:
            self._ended(job)


class Conductor:
    """Claims jobs from the board and runs their flows.

    TaskFlow's ``nonblocking`` conductor (``blocking`` with one worker)
    with fleetflow's check of each job (:func:`check_job`), named after
    the host and a token of this process (a claim names its owner: a
    restarted process must not pass for its dead predecessor).

    :param on_done: called with the job of each flow that finished.
    """

    def __init__(self, ctx, board, on_done=None):
        self.ctx = ctx
        self.board = board
        self.name = '%s-%s' % (ctx.conf.host, uuid.uuid4().hex[:6])
        self.workers = ctx.conf.jobboard.conductor_workers
        self._on_done = on_done
        self._waits = _Waits(ctx)
        self._claims = _ClaimKeeper(board, self.name, self._lost)
        conductor_class = NonBlockingConductor if self.workers > 1 \
            else BlockingConductor
        self._conductor = conductor_class(
            ctx, self.name,
            _ClaimingBoard(board, self._claims, self._claimed),
            persistence=ctx.persistence, engine=ff_engine.NAME,
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
        return self._waits.count()

    def _wait(self, engine, reason, recheck):
        """A flow waits holding its worker (a claim cannot be parked)."""
        if not self._waits.wait(engine, reason):
            # Stop where the in-process runner parks a flow: at the
            # failed poll, before its retry controller decides, or
            # before the poll.
            engine.suspend()

    def _claimed(self, job):
        # Other hosts may have run the flow since this one last did.
        flow_uuid = (job.details or {}).get('flow_uuid')
        if flow_uuid:
            forget_flow(self.ctx, flow_uuid)

    # Conductor events

    def _on_start(self, event_type, details):
        job, engine = details['job'], details['engine']
        ff_runner.OnWait(engine, functools.partial(self._wait, engine),
                         lambda: True).register()
        ff_runner.listen(engine, self.ctx)
        claim = self._claims.attach(job, engine)
        if claim is not None:
            _ClaimCheck(engine, claim).register()
        logutils.node_logger(LOG, job_node(job)).info(
            'Running flow %s (job %s)', job.name, job.uuid)

    def _on_consumed(self, event_type, details):
        job = details['job']
        node_id = job_node(job)
        logutils.node_logger(LOG, node_id).info(
            'Flow %s done (job %s)', job.name, job.uuid)
        if node_id and self.ctx.store.find_node(node_id) is None:
            with contextlib.closing(
                    self.ctx.persistence.get_connection()) as conn:
                with contextlib.suppress(Exception):
                    conn.destroy_logbook(node_id)
        if self._on_done is not None:
            self._on_done(job)

    def _on_abandoned(self, event_type, details):
        job = details['job']
        logutils.node_logger(LOG, job_node(job)).info(
            'Flow %s stopped; job %s is back on the board', job.name,
            job.uuid)

    def _lost(self, claim, owner):
        job = claim.job
        logutils.node_logger(LOG, job_node(job)).error(
            'Lost the claim on job %s (flow %s; now owned by %s): stopping '
            'the flow here at the next task boundary', job.uuid, job.name,
            owner or 'nobody')
        if claim.engine is not None:
            claim.engine.suspend()
            self._waits.stop_one(claim.engine)


# The launcher among several

class FleetLauncher(ff_launcher.Launcher):
    """A launcher that shares the fleet with others.

    Its passes take turns with the other launchers' on the database lock,
    and read the board at the start of their turn; it posts flows as jobs
    (:class:`JobboardRunner`) and looks after every node and request,
    whichever launcher started them.
    """

    def __init__(self, ctx, board, lock):
        self.board = board
        self.pass_lock = lock
        super().__init__(ctx)

    def _make_runner(self):
        return JobboardRunner(self.ctx, self.board, self.pass_lock,
                              on_done=self._flow_done)

    def _owns(self, launcher):
        return True

    def _owner_lock(self):
        # Launchers of a fleet share the database and take turns.
        return None

    def start(self):
        super().start()
        self.runner.start()

    def run_pass(self):
        try:
            with self.pass_lock.hold():
                self.runner.refresh()
                super().run_pass()
        except locks.LockTimeout as e:
            LOG.info('Pass skipped: %s', e)
        except Exception:
            LOG.exception('Launcher pass failed')


class Service:
    """What ``fleetflow-launcher`` runs with the jobboard, per its role.

    ``launcher``: passes over requests and nodes, posting flows;
    ``conductor``: runs flows from the board; ``both``.
    """

    def __init__(self, ctx):
        self.ctx = ctx
        self.role = ctx.conf.launcher.role
        self.board = Board(ctx.conf, ctx.persistence)
        self.launcher = None
        self.conductor = None
        if self.role in ('launcher', 'both'):
            self.launcher = FleetLauncher(
                ctx, self.board, locks.PassLock(
                    ctx.engine, keepalive=ctx.conf.jobboard.claim_expiry))
        if self.role in ('conductor', 'both'):
            self.conductor = Conductor(
                ctx, self.board, on_done=self._flow_done)

    def _flow_done(self, job):
        if self.launcher is None:
            return
        node_id = job_node(job) if job is not None else None
        if node_id and job.name.startswith('launch-'):
            # As in one process: a launch that readied its request's last
            # node fulfils it now, not at this host's next pass.
            self.launcher.fulfil_now(node_id)
        self.launcher.wake()

    # What the status endpoint reads

    @property
    def passes(self):
        return self.launcher.passes if self.launcher is not None else 0

    @property
    def cleanup_passes(self):
        return self.launcher.cleanup_passes if self.launcher is not None \
            else 0

    @property
    def leaked(self):
        return self.launcher.leaked if self.launcher is not None else {}

    @property
    def runner(self):
        return self.launcher.runner if self.launcher is not None \
            else self.conductor

    def request_reload(self):
        """Reload the layout: at the launcher's next pass, or now."""
        if self.launcher is not None:
            self.launcher.request_reload()
        else:
            ff_launcher.reload_layout(self.ctx)

    # Starting and stopping

    def start(self):
        self.board.connect()
        if self.launcher is not None:
            self.launcher.start()
        else:
            self.ctx.start()
        if self.conductor is not None:
            self.conductor.start()
        LOG.info('Host %s runs as %s on jobboard %s (%s)',
                 self.ctx.conf.host, self.role, self.board.namespace,
                 self.board.backend)

    def stop(self):
        if self.conductor is not None:
            self.conductor.stop()
        if self.launcher is not None:
            self.launcher.stop()
        else:
            self.ctx.stop()
        self.board.close()


def make_service(ctx):
    """The launcher, or with ``[jobboard] enabled`` a :class:`Service`.

    :raises ConfigError: for the conductor role without the jobboard.
    """
    if not ctx.conf.jobboard.enabled:
        if ctx.conf.launcher.role == 'conductor':
            raise exceptions.ConfigError(
                '[launcher] role = conductor needs [jobboard] enabled = '
                'true')
        return ff_launcher.Launcher(ctx)
    return Service(ctx)
