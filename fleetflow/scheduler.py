"""One background thread for periodic jobs and one-shot timers."""

import heapq
import itertools
import threading
import time

import futurist
from futurist import periodics


class Scheduler:
    """Runs periodic callables and ``call_at`` timers on one thread.

    Callbacks must return quickly: they share the thread. Timers are checked
    every ``tick`` seconds.
    """

    def __init__(self, tick=0.02):
        self._timers = []
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._worker = periodics.PeriodicWorker(
            [], executor_factory=futurist.SynchronousExecutor)
        self._thread = None
        self.add_periodic(self._fire_due_timers, tick)

    def add_periodic(self, callback, spacing, run_immediately=False):
        """Call ``callback()`` every ``spacing`` seconds."""
        def job():
            callback()
        job = periodics.periodic(spacing, run_immediately=run_immediately)(
            job)
        self._worker.add(job)

    def call_at(self, when, callback):
        """Call ``callback()`` once, at ``when`` (a ``time.time()``)."""
        with self._lock:
            heapq.heappush(self._timers, (when, next(self._counter),
                                          callback))

    def _fire_due_timers(self):
        now = time.time()
        due = []
        with self._lock:
            while self._timers and self._timers[0][0] <= now:
                due.append(heapq.heappop(self._timers)[2])
        for callback in due:
            callback()

    def start(self):
        self._thread = threading.Thread(target=self._worker.start,
                                        name='fleetflow-scheduler',
                                        daemon=True)
        self._thread.start()

    def stop(self):
        self._worker.stop()
        if self._thread is not None:
            self._worker.wait()
            self._thread.join()
