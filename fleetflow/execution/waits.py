"""One waiting policy for every flow, however it runs.

A task says that its flow must wait by failing with one of
:data:`PARKING` (a poll that found nothing new, a rate limit); a poll
about to run is asked first when it can tell without calling the cloud
(:func:`~fleetflow.retries.waiting_before_poll`), and a poll that would
only find it must wait is waited for before it runs, failing no attempt.
:class:`OnWait` hands each such wait to its runner.

:meth:`Waits.park` decides when a waiting flow goes on: when the
provider's shared instance listing shows its instance changed, or when
its time to try again comes, whichever is first; a flow parked before a
poll is asked again then, and parked again while the poll would still
only find that it must wait. The in-process runner parks a flow and
frees its worker (:class:`~fleetflow.execution.local.LocalRunner`); a
conductor cannot give a claimed job back without losing it, so its flow
waits in place (:meth:`Waits.wait_here`), on the same wake-ups.
"""

import functools
import logging
import threading
import time

from taskflow import states
from taskflow.types import failure as tf_failure

from fleetflow.drivers import base as driver_base
from fleetflow import exceptions
from fleetflow.execution import taskflow_overrides
from fleetflow import retries

LOG = logging.getLogger(__name__)

PARKING = (exceptions.StillWaiting, driver_base.RateLimitError)


class OnWait(taskflow_overrides.Listener):
    """Hands a flow's waits to ``wait(reason, recheck)``.

    ``recheck`` (None for a task's failure) asks the poll about to run
    again; polls are asked first only when ``ask_before_poll()`` says so.
    """

    def __init__(self, engine, wait, ask_before_poll):
        super().__init__(engine, task_listen_for=(states.FAILURE,),
                         flow_listen_for=(),
                         retry_listen_for=(states.SUCCESS,))
        self._wait = wait
        self._ask_before_poll = ask_before_poll

    def on_task(self, state, details):
        failure = details.get('result')
        if (isinstance(failure, tf_failure.Failure)
                and failure.check(*PARKING)
                and failure.exception is not None):
            self._wait(failure.exception, None)

    def on_retry(self, state, details):
        if self._ask_before_poll():
            recheck = functools.partial(retries.waiting_before_poll,
                                        self.engine, details)
            reason = recheck()
            if reason is not None:
                self._wait(reason, recheck)


def wake_at(reason):
    """When a flow waiting for ``reason`` goes on at the latest."""
    return (getattr(reason, 'wake_at', None)
            or getattr(reason, 'retry_at', None) or time.time())


class Parked:
    """One wait: calls its ``wake`` once, unless cancelled first."""

    def __init__(self, wake):
        self._wake = wake
        self._lock = threading.Lock()
        self._over = False
        self.watch = None

    def fire(self):
        if self._end():
            self._wake()

    def cancel(self):
        self._end()

    def _end(self):
        with self._lock:
            if self._over:
                return False
            self._over = True
            watch, self.watch = self.watch, None
        if watch is not None:
            watch.cancel()
        return True


def ask_again(recheck, label=''):
    """What ``recheck()`` says the flow still waits for (None: nothing)."""
    if recheck is None:
        return None
    try:
        return recheck()
    except Exception:
        LOG.exception('%sAsking whether a flow must still wait failed; '
                      'running it', label)
        return None


class Waits:
    """Where the flows of one process wait; see the module docstring."""

    def __init__(self, ctx):
        self.ctx = ctx
        self._lock = threading.Lock()
        self._here = {}
        self._stopping = False

    def park(self, reason, recheck, wake, label=''):
        """Call ``wake()`` once the flow waiting for ``reason`` may go on.

        ``recheck()`` (when not None) is asked first; a reason it gives
        parks the flow again. Returns the :class:`Parked` wait.
        """
        parked = Parked(functools.partial(self._woken, recheck, wake, label))
        provider = getattr(reason, 'provider', None)
        if getattr(reason, 'external_id', None) and provider:
            parked.watch = self.ctx.provider(provider).cache.watch(
                reason.external_id, reason.seen_state, parked.fire)
        self.ctx.scheduler.call_at(wake_at(reason), parked.fire)
        return parked

    def _woken(self, recheck, wake, label):
        reason = ask_again(recheck, label)
        if reason is not None:
            self.park(reason, recheck, wake, label)
            return
        wake()

    def wait_here(self, key, reason, recheck, gone=lambda: False):
        """Block this thread until the flow may go on.

        ``recheck`` is asked on this thread: the engine that waits here
        holds its storage's lock.

        :returns: whether the flow goes on (False: the process stops,
            :meth:`stop_one` was called for ``key``, or ``gone()``).
        """
        while reason is not None:
            event = threading.Event()
            with self._lock:
                if self._stopping or gone():
                    return False
                self._here[key] = event
            parked = self.park(reason, None, event.set)
            try:
                event.wait()
            finally:
                parked.cancel()
                with self._lock:
                    go_on = self._here.pop(key, None) is event \
                        and not self._stopping
            if not go_on:
                return False
            reason = ask_again(recheck)
        return True

    def stop_one(self, key):
        """Wake the flow ``key`` that waits here, to stop it."""
        with self._lock:
            event = self._here.pop(key, None)
        if event is not None:
            event.set()

    def waiting_here(self):
        with self._lock:
            return len(self._here)

    def stop(self):
        """Wake every flow that waits here, to stop it."""
        with self._lock:
            self._stopping = True
            events = list(self._here.values())
            self._here.clear()
        for event in events:
            event.set()
