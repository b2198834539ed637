"""One background thread for periodic jobs and one-shot timers.

Periodic jobs and timers share one heap, ordered by when each is due; the
thread sleeps until the first is due, or until an earlier one is added.
An idle scheduler does not wake at all. (It replaced futurist's
``PeriodicWorker`` with a 20 ms timer tick: that machinery cost more CPU
than the launcher's own periodic jobs.)
"""

import heapq
import itertools
import logging
import threading
import time

LOG = logging.getLogger(__name__)


class Scheduler:
    """Runs periodic callables and ``call_at`` timers on one thread.

    Callbacks must return quickly: they share the thread. One that raises
    is logged, and a periodic one still runs again.
    """

    def __init__(self):
        self._due = []
        self._counter = itertools.count()
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = None

    def add_periodic(self, callback, spacing, run_immediately=False):
        """Call ``callback()`` every ``spacing`` seconds.

        A call starts ``spacing`` after the last one started, or at once
        when the last one took longer.
        """
        first = time.time() + (0 if run_immediately else spacing)
        self._push(first, callback, spacing)

    def call_at(self, when, callback):
        """Call ``callback()`` once, at ``when`` (a ``time.time()``)."""
        self._push(when, callback, None)

    def _push(self, when, callback, spacing):
        with self._changed:
            entry = (when, next(self._counter), callback, spacing)
            heapq.heappush(self._due, entry)
            if self._due[0] is entry:
                self._changed.notify()

    def _next(self):
        """Wait for the first entry to be due and take it; None to stop."""
        with self._changed:
            while not self._stopping:
                wait = self._due[0][0] - time.time() if self._due else None
                if wait is not None and wait <= 0:
                    return heapq.heappop(self._due)
                self._changed.wait(wait)
            return None

    def _run(self):
        while (entry := self._next()) is not None:
            _when, _seq, callback, spacing = entry
            started = time.time()
            try:
                callback()
            except Exception:
                LOG.exception('Scheduled call %r failed', callback)
            if spacing is not None:
                self._push(max(started + spacing, time.time()), callback,
                           spacing)

    def start(self):
        self._thread = threading.Thread(target=self._run,
                                        name='fleetflow-scheduler',
                                        daemon=True)
        self._thread.start()

    def stop(self):
        with self._changed:
            self._stopping = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join()
