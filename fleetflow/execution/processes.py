"""Runs flows in worker processes of this launcher, to use every core.

A flow spends most of its CPU in TaskFlow's engine, under one process's
GIL. With ``[launcher] flow_processes`` above one, the launcher starts that
many flow processes and hands each new or resumed flow to the least busy
one; a node's flow stays in its process until it ends.

Each flow process runs its flows as the in-process runner does
(:class:`~fleetflow.execution.local.LocalRunner`, on the same database,
recording and loading flows from the registry only), but waits on the
launcher's listings: a flow that must wait is suspended and parked in the
launcher (:mod:`fleetflow.execution.waits`), and a poll that waits a
little in its task waits for the launcher's listing, so that spreading
flows adds no cloud call. A flow woken by a listing is sent back to its
process with its instance as that listing showed it.

Flow processes are forked from a server process that imported what they
run (``multiprocessing``'s forkserver): they share its memory pages, and
none is forked from the threaded launcher. A flow process that dies is
started again and its flows resumed from their logbooks, as after a
crash. One whose launcher dies exits at once
(its pipe closes): a launcher started again does not resume a flow that
an old process still runs.
"""

import collections
import contextlib
import functools
import gc
import itertools
import logging
import logging.handlers
import multiprocessing
import os
import signal
import threading
import time

from oslo_config import cfg
from taskflow import states

from fleetflow import conf as ff_conf
from fleetflow import context
from fleetflow import exceptions
from fleetflow.execution import base
from fleetflow.execution import local
from fleetflow.execution import waits

LOG = logging.getLogger(__name__)

#: flow processes started at most for ``flow_processes = 0``: the flows'
#: writes to one database take turns, so more gain little
AUTO_MAX = 4
#: options a flow process does not take from its launcher's
_NOT_COPIED = ('config_file', 'config_dir', 'config_source')
#: instances a flow process keeps of those its launcher sent
RELAYED = 4096
#: allocations between young-generation collections in a launcher and its
#: flow processes (Python's default is 700): flows allocate many
#: short-lived objects, few of them in cycles
GC_THRESHOLD = (10000, 50, 100)
#: tokens of a flow process's waits on its launcher's listings
_TOKENS = itertools.count()
#: shortest time between two starts of one flow process (one that dies
#: at once, again and again, is not started in a loop)
RESTART_SPACING = 5.0
#: seconds a stopping flow process has to stop its flows at a task boundary
STOP_TIMEOUT = 60


def flow_processes(conf):
    """How many flow processes ``[launcher] flow_processes`` asks for.

    0: one per CPU this process may run on, :data:`AUTO_MAX` at most. 1:
    none (flows run in the launcher's own process).
    """
    wanted = conf.launcher.flow_processes
    if wanted:
        return wanted
    if hasattr(os, 'sched_getaffinity'):
        return min(AUTO_MAX, len(os.sched_getaffinity(0)))
    return min(AUTO_MAX, os.cpu_count() or 1)


def conf_values(conf):
    """The launcher's options, ``{group or None: {name: value}}``."""
    values = {}
    for name in conf:
        value = conf[name]
        if isinstance(value, cfg.ConfigOpts.GroupAttr):
            values[name] = {opt: value[opt] for opt in value}
        elif name not in _NOT_COPIED:
            values.setdefault(None, {})[name] = value
    return values


def _conf_from(values):
    conf = cfg.ConfigOpts()
    ff_conf.setup(conf, [], default_config_files=[])
    for group, options in values.items():
        for name, value in options.items():
            with contextlib.suppress(cfg.NoSuchOptError):
                conf.set_override(name, value, group)
    return conf


class RelayedListing:
    """A flow process's view of its launcher's listing of one provider.

    It holds what the launcher sent: the instance as the listing that
    woke a flow, or ended a wait here, showed it. It never lists.
    """

    def __init__(self, name, interval, send):
        self.name = name
        self.interval = interval
        self._send = send
        self._seen = collections.OrderedDict()
        self._waits = {}
        self._stopping = False
        self._lock = threading.Lock()

    def lookup(self, external_id, not_before):
        """``(known, instance)``, as :meth:`InstanceCache.lookup`."""
        with self._lock:
            listed_at, instance = self._seen.get(external_id, (0.0, None))
        if listed_at < not_before:
            return False, None
        return True, instance

    def relay(self, external_id, listed_at, instance):
        with self._lock:
            self._seen.pop(external_id, None)
            self._seen[external_id] = (listed_at, instance)
            if len(self._seen) > RELAYED:
                self._seen.popitem(last=False)

    def wait_change(self, external_id, seen_state, timeout):
        """As :meth:`InstanceCache.wait_change`, on the launcher's listing."""
        changed = threading.Event()
        with self._lock:
            if self._stopping:
                return
            token = next(_TOKENS)
            self._waits[token] = changed
        self._send(('watch', token, self.name, external_id, seen_state))
        if not changed.wait(timeout):
            self._send(('unwatch', token))
        with self._lock:
            self._waits.pop(token, None)

    def changed(self, token, external_id, listed_at, instance):
        """The launcher's listing ended the wait ``token``."""
        self.relay(external_id, listed_at, instance)
        with self._lock:
            changed = self._waits.pop(token, None)
        if changed is not None:
            changed.set()

    def waiting(self):
        return False

    def stop_waits(self):
        with self._lock:
            self._stopping = True
            waits, self._waits = list(self._waits.values()), {}
        for changed in waits:
            changed.set()


class _Worker(local.LocalRunner):
    """The runner of a flow process: its launcher parks its flows."""

    def __init__(self, ctx, send):
        super().__init__(ctx)
        self._send = send

    def _park(self, run):
        self._send(_parked(run.node_id, run.park))

    def wake(self, node_id, provider, external_id, listed_at, instance):
        """Go on with a parked flow, with what the listing showed."""
        if provider in self.ctx.providers and external_id:
            self.ctx.provider(provider).cache.relay(external_id, listed_at,
                                                    instance)
        with self._lock:
            run = self._runs.get(node_id)
        if run is None:
            return
        reason = waits.ask_again(run.recheck, '[node %s] ' % node_id)
        if reason is not None:
            self._send(_parked(node_id, reason))
            return
        self._submit(run, woken=True)

    def resume_flow(self, node_id, flow_uuid):
        """Resume the node's unfinished flow ``flow_uuid``."""
        with contextlib.closing(self.ctx.persistence.get_connection()) \
                as conn:
            book = conn.get_logbook(node_id)
        detail = book.find(flow_uuid)
        if detail is None or detail.state in base.FINISHED:
            self._send(('done', node_id, None, states.FAILURE,
                        self.ctx.store.transactions))
            return
        self.resume(book, detail)

    def _finish(self, run, state):
        super()._finish(run, state)
        self._send(('done', run.node_id, run.name, state,
                    self.ctx.store.transactions))


def _parked(node_id, reason):
    return ('parked', node_id, waits.wake_at(reason),
            getattr(reason, 'provider', None),
            getattr(reason, 'external_id', None),
            getattr(reason, 'seen_state', None))


def _relay_listings(ctx, send):
    """Have the providers new to this process wait on the launcher's."""
    for provider in ctx.providers.values():
        if not isinstance(provider.cache, RelayedListing):
            provider.cache = RelayedListing(
                provider.name, provider.cache.interval, send)


class _LogsToLauncher:
    """Where a flow process's log records go: to its launcher's logging."""

    def __init__(self, send):
        self.put_nowait = lambda record: send(('log', record))


def serve(values, layout, log_level, pipe):
    """A flow process: runs what its launcher sends on ``pipe``."""
    # Its launcher stops it, and reloads the layout: a terminal's Ctrl-C
    # or a SIGHUP to the process group is the launcher's to act on.
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    gc.set_threshold(*GC_THRESHOLD)
    lock = threading.Lock()

    def send(message):
        with lock, contextlib.suppress(OSError):
            pipe.send(message)

    root = logging.getLogger()
    root.setLevel(log_level)
    root.addHandler(logging.handlers.QueueHandler(_LogsToLauncher(send)))
    conf = _conf_from(values)
    ctx = context.Context(conf, layout)
    _relay_listings(ctx, send)
    context.set_current(ctx)
    ctx.start()
    worker = _Worker(ctx, send)
    send(('ready', ctx.store.transactions))
    while True:
        try:
            message = pipe.recv()
        except (EOFError, OSError):
            # The launcher is gone: stop now, as it did; a launcher started
            # again resumes these flows and must find none running.
            os._exit(1)
        kind, args = message[0], message[1:]
        try:
            if kind == 'start':
                worker.start_flow(*args)
            elif kind == 'resume':
                worker.resume_flow(*args)
            elif kind == 'wake':
                worker.wake(*args)
            elif kind == 'layout':
                ctx.apply_layout(*args)
                _relay_listings(ctx, send)
            elif kind == 'changed':
                ctx.provider(args[0]).cache.changed(*args[1:])
            elif kind == 'stop':
                break
        except Exception as e:
            # One node's bad flow must not stop the others.
            LOG.error('Flow process: %s %s failed: %s', kind, args[:1], e)
            if kind in ('start', 'resume'):
                send(('done', args[0], None, states.FAILURE,
                      ctx.store.transactions))
    worker.stop()
    ctx.stop()
    send(('stopped',))


class _Remote:
    """A flow run by a flow process, as the launcher knows it."""

    def __init__(self, node_id, name, process):
        self.node_id = node_id
        self.name = name
        self.process = process
        self.state = None
        self.parked = None


def _multiprocessing():
    """Where flow processes come from: a server that imported their code."""
    forkserver = multiprocessing.get_context('forkserver')
    forkserver.set_forkserver_preload([__name__])
    return forkserver


class _Process:
    """One flow process and the pipe to it."""

    def __init__(self, index, runner):
        self.index = index
        self.runner = runner
        self.lock = threading.Lock()
        self.pipe = None
        self.process = None
        self.ready = threading.Event()
        self.started_at = None
        #: its flows' waits on this process's listings, by token
        self.watches = {}
        #: database transactions its flows made, in its earlier lives
        self._before = 0
        #: and in this one, as it said last
        self._now = 0

    @property
    def alive(self):
        """Whether it runs: one that died takes no new flow."""
        return self.process is not None and self.process.is_alive()

    @property
    def transactions(self):
        return self._before + self._now

    def count(self, transactions):
        """It made ``transactions`` so far (its threads say it unordered)."""
        self._now = max(self._now, transactions)

    def start(self):
        self.started_at = time.monotonic()
        self.ready.clear()
        self._before, self._now = self.transactions, 0
        processes = _multiprocessing()
        self.pipe, theirs = processes.Pipe()
        self.process = processes.Process(
            target=serve, name='fleetflow-flows-%d' % self.index,
            args=(conf_values(self.runner.ctx.conf), self.runner.ctx.layout,
                  logging.getLogger().getEffectiveLevel(), theirs),
            daemon=True)
        self.process.start()
        theirs.close()
        threading.Thread(
            target=self.runner._read, args=(self, self.pipe),
            name='fleetflow-flows-%d-reader' % self.index,
            daemon=True).start()

    def send(self, *message):
        with self.lock:
            try:
                self.pipe.send(message)
            except OSError as e:
                LOG.warning('Flow process %d: %s not sent: %s',
                            self.index, message[0], e)


def _log(record):
    """Log a flow process's record as the launcher's own are logged."""
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


class ProcessRunner(base.HostRunner):
    """Runs flows in ``processes`` flow processes; see the module doc."""

    def __init__(self, ctx, processes, on_done=None):
        super().__init__(ctx, on_done=on_done)
        self._waits = waits.Waits(ctx)
        self._processes = [_Process(index, self)
                           for index in range(processes)]
        self._stopping = False

    def start(self):
        """Start the flow processes; return once each can run flows.

        :raises FleetflowError: when one did not start.
        """
        for process in self._processes:
            if process.process is None:
                process.start()
        for process in self._processes:
            process.ready.wait(STOP_TIMEOUT)
            if not process.ready.is_set():
                raise exceptions.FleetflowError(
                    'flow process %d did not start (exit code %s)' % (
                        process.index, process.process.exitcode))

    @property
    def transactions(self):
        return sum(process.transactions for process in self._processes)

    def use_layout(self, layout):
        for process in self._processes:
            process.send('layout', layout)

    # Starting flows

    def start_flow(self, node_id, kind, inputs):
        run = self._assign(node_id, '%s-%s' % (kind, node_id))
        run.process.send('start', node_id, kind, inputs)
        return run

    def resume(self, book, detail):
        run = self._assign(book.uuid, detail.name)
        run.process.send('resume', book.uuid, detail.uuid)

    def _assign(self, node_id, name):
        with self._lock:
            alive = [p for p in self._processes if p.alive]
            if not alive:
                raise exceptions.FleetflowError(
                    'no flow process runs: node %s waits for one' % node_id)
            load = collections.Counter(run.process.index
                                       for run in self._runs.values())
            run = _Remote(node_id, name,
                          min(alive, key=lambda p: load[p.index]))
            self._claim(node_id, run)
        return run

    # What the flow processes say

    def _read(self, process, pipe):
        while True:
            try:
                message = pipe.recv()
            except (EOFError, OSError):
                break
            kind, args = message[0], message[1:]
            if kind == 'parked':
                self._park(*args)
            elif kind == 'watch':
                self._watch(process, *args)
            elif kind == 'unwatch':
                self._unwatch(process, *args)
            elif kind == 'done':
                process.count(args[-1])
                self._done(*args[:-1])
            elif kind == 'log':
                _log(*args)
            elif kind == 'ready':
                process.count(args[0])
                process.ready.set()
            elif kind == 'stopped':
                return
        if not self._stopping:
            self._restart(process)

    def _park(self, node_id, wake_at, provider, external_id, seen_state):
        with self._lock:
            run = self._runs.get(node_id)
            self.parks += 1
        if run is None:
            return
        reason = exceptions.StillWaiting('waiting', wake_at, provider,
                                         external_id, seen_state)
        run.parked = self._waits.park(
            reason, None, functools.partial(self._wake, run, reason),
            label='[node %s] ' % node_id)

    def _wake(self, run, reason):
        run.parked = None
        listed_at, instance = 0.0, None
        if reason.provider in self.ctx.providers and reason.external_id:
            listed_at, instance = self.ctx.provider(
                reason.provider).cache.last_seen(reason.external_id)
        run.process.send('wake', run.node_id, reason.provider,
                         reason.external_id, listed_at, instance)

    def _watch(self, process, token, provider, external_id, seen_state):
        """A flow of ``process`` waits in its task for its instance."""
        if provider not in self.ctx.providers:
            return
        cache = self.ctx.provider(provider).cache

        def changed():
            with self._lock:
                waiting = process.watches.pop(token, False) is not False
            if waiting:
                process.send('changed', provider, token, external_id,
                             *cache.last_seen(external_id))

        with self._lock:
            process.watches[token] = None
        watch = cache.watch(external_id, seen_state, changed)
        with self._lock:
            if token in process.watches:
                process.watches[token] = watch

    def _unwatch(self, process, token):
        with self._lock:
            watch = process.watches.pop(token, None)
        if watch is not None:
            watch.cancel()

    def _done(self, node_id, name, state):
        with self._lock:
            run = self._runs.pop(node_id, None)
        if run is None:
            return
        run.state = state
        run.name = name or run.name
        if self.on_done is not None and state in base.FINISHED:
            self.on_done(run)

    def _restart(self, process):
        """Start a dead flow process again; resume its flows there."""
        LOG.error('Flow process %d exited (%s); starting it again and '
                  'resuming its flows', process.index,
                  process.process.exitcode)
        with self._lock:
            lost = [run for run in self._runs.values()
                    if run.process is process]
            for run in lost:
                if run.parked is not None:
                    run.parked.cancel()
                    run.parked = None
            watches, process.watches = process.watches, {}
        for watch in watches.values():
            if watch is not None:
                watch.cancel()
        time.sleep(max(0.0, process.started_at + RESTART_SPACING
                       - time.monotonic()))
        if self._stopping:
            return
        process.start()
        for run in lost:
            node = self.ctx.store.find_node(run.node_id)
            if node is None or not node['flow_id']:
                self._done(run.node_id, run.name, states.FAILURE)
                continue
            process.send('resume', run.node_id, node['flow_id'])

    # Stopping

    def stop(self, timeout=None):
        self._stopping = True
        for process in self._processes:
            process.send('stop')
        for process in self._processes:
            if process.process is None:
                continue
            process.process.join(timeout or STOP_TIMEOUT)
            if process.process.is_alive():
                LOG.warning('Flow process %d did not stop; killed',
                            process.index)
                process.process.kill()
                process.process.join()
            process.pipe.close()
        with self._lock:
            for run in self._runs.values():
                if run.parked is not None:
                    run.parked.cancel()
            self._runs.clear()


def make_runner(ctx):
    """A jobboard-less launcher's runner, per ``flow_processes``."""
    count = flow_processes(ctx.conf)
    if count > 1:
        return ProcessRunner(ctx, count)
    return local.LocalRunner(ctx)
