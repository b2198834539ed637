"""One cached listing of a provider's instances serves every waiting node.

A thousand nodes waiting for their instances to become active cost one
``list_instances`` call per refresh interval, not a thousand ``get`` calls.
The cache lists only while someone waits on it, and wakes a waiter as soon
as a listing shows its instance in another state than the one it saw.
"""

import logging
import threading
import time

LOG = logging.getLogger(__name__)

GONE = 'gone'


class InstanceCache:
    """The last listing of one provider's instances.

    :param driver: the provider's driver.
    :param scheduler: a :class:`fleetflow.scheduler.Scheduler` on which the
        refresh runs every ``interval`` seconds.
    """

    def __init__(self, driver, scheduler, interval):
        self.driver = driver
        self.interval = interval
        self._lock = threading.Lock()
        self._instances = {}
        self._listed_at = 0.0
        self._watchers = {}
        self._stopping = False
        scheduler.add_periodic(self.refresh, interval)

    def lookup(self, external_id, not_before):
        """Return ``(known, instance)`` for an instance.

        ``known`` is false while no listing that started after
        ``not_before`` has been seen; ``instance`` is None when that listing
        did not hold it (it is gone, or was never created).
        """
        with self._lock:
            if self._listed_at < not_before:
                return False, None
            return True, self._instances.get(external_id)

    def watch(self, external_id, seen_state, callback, interrupt=False):
        """Call ``callback()`` once a listing shows another state.

        ``seen_state`` is the state the caller saw (None when unknown, or
        :data:`GONE`); a watch with ``seen_state`` None fires on the first
        listing after it. With ``interrupt``, it also fires when the
        process stops (:meth:`stop_waits`). Returns a :class:`Watch` that
        can be cancelled.
        """
        watch = Watch(seen_state, callback, interrupt)
        with self._lock:
            stopped = interrupt and self._stopping
            if not stopped:
                self._watchers.setdefault(external_id, []).append(watch)
        if stopped:
            callback()
        return watch

    def wait_change(self, external_id, seen_state, timeout):
        """Block until a listing shows another state, at most ``timeout``.

        Returns at once, and ends every such wait, once the process stops
        (:meth:`stop_waits`).
        """
        changed = threading.Event()
        watch = self.watch(external_id, seen_state, changed.set,
                           interrupt=True)
        changed.wait(timeout)
        watch.cancel()

    def stop_waits(self):
        """End the waits of :meth:`wait_change`: the process stops.

        The flows that waited look once more and are then parked, to be
        resumed at the next start, without holding up the stop.
        """
        with self._lock:
            self._stopping = True
            fire = [watch.callback for entries in self._watchers.values()
                    for watch in entries
                    if watch.interrupt and not watch.cancelled]
        for callback in fire:
            callback()

    def wait_gone(self, external_id, timeout):
        """Block until a listing no longer holds the instance.

        :returns: True when it is gone, False when ``timeout`` passed.
        """
        deadline = time.time() + timeout
        gone = threading.Event()
        since = time.time()

        def check():
            known, instance = self.lookup(external_id, since)
            if known and instance is None:
                gone.set()
            elif time.time() < deadline:
                self.watch(external_id, state_of(instance), check)

        self.watch(external_id, None, check)
        return gone.wait(timeout)

    def waiting(self):
        """Whether a flow waits on this cache."""
        with self._lock:
            return bool(self._watchers)

    def refresh(self):
        """List the instances if anyone waits, then wake who should."""
        with self._lock:
            if not self._watchers:
                return
        started = time.time()
        try:
            instances = self.driver.list_instances()
        except Exception:
            LOG.exception('Listing instances of provider %s failed',
                          self.driver.name)
            return
        with self._lock:
            self._instances = {i.external_id: i for i in instances}
            self._listed_at = started
            watchers, self._watchers = self._watchers, {}
            fire, keep = [], {}
            for external_id, entries in watchers.items():
                state = state_of(self._instances.get(external_id))
                for watch in entries:
                    if watch.cancelled:
                        continue
                    if watch.seen_state == state:
                        keep.setdefault(external_id, []).append(watch)
                    else:
                        fire.append(watch.callback)
            for external_id, entries in keep.items():
                self._watchers.setdefault(external_id, []).extend(entries)
        for callback in fire:
            callback()


class Watch:
    """A pending :meth:`InstanceCache.watch`."""

    def __init__(self, seen_state, callback, interrupt=False):
        self.seen_state = seen_state
        self.callback = callback
        #: whether :meth:`InstanceCache.stop_waits` ends it
        self.interrupt = interrupt
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


def state_of(instance):
    return instance.state if instance is not None else GONE
