"""One cached listing of a provider's instances serves every waiting node.

A thousand nodes waiting for their instances to become active cost one
``list_instances`` call per listing, not a thousand ``get`` calls. The
cache lists only while someone waits on it, and wakes a waiter as soon as
a listing shows its instance in another state than the one it saw.

When it lists adapts to what waits:

- A waiter could be ready at its *hint*: the time it started waiting (an
  instance's creation, its delete; a wait parked again counts from its
  first start) plus the shortest time such a change took lately in this
  provider (learnt from the listings). A listing is made when the
  earliest hint comes; what is learnt moves the hints of those already
  waiting too.
- A waiter that a listing after its hint still showed unchanged waits for
  a listing ``floor`` seconds after the last one, then twice as long after
  each listing that woke nobody, up to ``interval``; a listing that woke
  someone starts again from ``floor``.
- While nothing is learnt of its kind of change (a process's first
  creates, or first deletes), a waiter has no hint and is listed as one
  past its hint, except that the wait grows past ``interval`` to a
  quarter of the time the listings have shown no change (since one last
  woke someone, or since the wait began): a first change is seen at most
  that much late, and instances that take minutes to boot cost a few
  listings, not one per interval.
- An instance not listed yet that the next listing shows building is
  still awaited: that listing does not wake its waiter.
- Two listings are never less than ``floor`` apart, and over any stretch
  of time there are at most ``BURST`` more listings than one per
  ``interval`` (a token bucket).
"""

import collections
import logging
import threading
import time

from fleetflow.drivers import base as driver_base

LOG = logging.getLogger(__name__)

GONE = 'gone'
#: listings that may be made sooner than one per interval, in a burst
BURST = 10
#: recent changes from which the shortest change time is learnt
LEARNT = 20
#: the kinds of change a waiter waits for
UP, DOWN = 'up', 'gone'
#: with nothing learnt, listings wait up to this fraction of the quiet time
QUIET = 1 / 4


class InstanceCache:
    """The last listing of one provider's instances.

    :param driver: the provider's driver.
    :param scheduler: a :class:`fleetflow.scheduler.Scheduler` on which the
        listings run.
    :param interval: the longest time between listings while anyone waits
        past the hint learnt for it (longer while nothing is learnt).
    :param floor: the shortest time between two listings (at most
        ``interval``; default ``interval``).
    """

    def __init__(self, driver, scheduler, interval, floor=None):
        self.driver = driver
        self.interval = interval
        self.floor = min(interval, interval if floor is None else floor)
        self._scheduler = scheduler
        self._lock = threading.Lock()
        self._instances = {}
        self._listed_at = 0.0
        self._watchers = {}
        #: when each instance that someone looked up began to change
        self._since = {}
        self._took = {UP: collections.deque(maxlen=LEARNT),
                      DOWN: collections.deque(maxlen=LEARNT)}
        self._spacing = self.floor
        #: when the listings last showed a change, or the wait began
        self._quiet_since = 0.0
        self._tokens = float(BURST)
        self._tokens_at = time.time()
        self._next_at = None
        self._listing = False
        self._stopping = False
        #: listings made
        self.listings = 0

    def lookup(self, external_id, not_before):
        """Return ``(known, instance)`` for an instance.

        ``known`` is false while no listing that started after
        ``not_before`` has been seen; ``instance`` is None when that listing
        did not hold it (it is gone, or was never created).
        """
        with self._lock:
            self._since[external_id] = max(
                not_before, self._since.get(external_id, not_before))
            if self._listed_at < not_before:
                return False, None
            return True, self._instances.get(external_id)

    def last_seen(self, external_id):
        """``(when the last listing started, the instance it showed)``."""
        with self._lock:
            return self._listed_at, self._instances.get(external_id)

    def watch(self, external_id, seen_state, callback, interrupt=False):
        """Call ``callback()`` once a listing shows another state.

        ``seen_state`` is the state the caller saw (None when unknown, or
        :data:`GONE`); a watch with ``seen_state`` None fires on the first
        listing after it, unless that listing shows the instance building
        (then taken as the state seen). A listing that began before the
        wait did (the time given to :meth:`lookup`) does not count. With
        ``interrupt``, it also fires when the process stops
        (:meth:`stop_waits`). Returns a :class:`Watch` that can be
        cancelled.
        """
        with self._lock:
            watch = Watch(seen_state, callback, interrupt,
                          *self._kind(external_id, seen_state))
            stopped = interrupt and self._stopping
            if not stopped:
                if not self._watchers:
                    self._quiet_since = time.time()
                    self._spacing = self.floor
                self._watchers.setdefault(external_id, []).append(watch)
                self._schedule(self._wanted(watch, self._shortest()))
        if stopped:
            callback()
        return watch

    def _kind(self, external_id, seen_state):
        """``(kind of change, since)`` of a new waiter."""
        if seen_state is None:
            seen_state = state_of(self._instances.get(external_id))
        kind = UP if seen_state in (driver_base.BUILDING, GONE) else DOWN
        return kind, self._since.setdefault(external_id, time.time())

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

    def waiting(self):
        """Whether a flow waits on this cache."""
        with self._lock:
            return bool(self._watchers)

    # When to list

    def _shortest(self):
        """The shortest change time learnt of each kind (lock held)."""
        return {kind: min(took) for kind, took in self._took.items() if took}

    def _wanted(self, watch, shortest):
        """When ``watch`` wants a listing (lock held)."""
        if watch.kind not in shortest:
            quiet = self._listed_at - self._quiet_since
            return self._listed_at + max(self._spacing, quiet * QUIET)
        hint = watch.since + shortest[watch.kind]
        if hint > self._listed_at:
            return hint
        return self._listed_at + self._spacing

    def _schedule(self, wanted):
        """Have a listing made at ``wanted``, or later (lock held).

        Not before ``floor`` after the last listing, nor before the
        bucket has a token; not later than one already planned. While a
        listing is under way, its end plans the next one.
        """
        if self._listing:
            return
        if self._tokens < 1:
            wanted = max(wanted, self._tokens_at
                         + (1 - self._tokens) * self.interval)
        wanted = max(wanted, self._listed_at + self.floor)
        if self._next_at is not None and self._next_at <= wanted:
            return
        self._next_at = wanted
        self._scheduler.call_at(wanted, self._when_due)

    def _when_due(self):
        with self._lock:
            if self._next_at is None or time.time() < self._next_at:
                return   # a listing planned for a time that changed
            self._next_at = None
        self.refresh()

    def _take_token(self, now):
        self._tokens = min(BURST, self._tokens
                           + (now - self._tokens_at) / self.interval) - 1
        self._tokens_at = now

    # Listing

    def refresh(self):
        """List the instances if anyone waits; wake who should.

        Then plans the next listing.
        """
        with self._lock:
            if not self._watchers:
                return
            started = time.time()
            self._take_token(started)
            self._listing = True
        try:
            instances = self.driver.list_instances()
        except Exception:
            LOG.exception('Listing instances of provider %s failed',
                          self.driver.name)
            instances = None
        with self._lock:
            self._listing = False
            self.listings += 1
            if instances is not None:
                fire = self._update(instances, started)
            else:
                fire = []
                self._spacing = min(self.interval, 2 * self._spacing)
            shortest = self._shortest()
            wanted = min((self._wanted(watch, shortest)
                          for entries in self._watchers.values()
                          for watch in entries), default=None)
            if wanted is not None:
                self._schedule(wanted)
            LOG.debug('Listed provider %s: %s instances, %d waiters woken, '
                      '%d waiting, next listing at %s', self.driver.name,
                      'no' if instances is None else len(instances),
                      len(fire), sum(map(len, self._watchers.values())),
                      self._next_at)
        for callback in fire:
            callback()

    def _update(self, instances, started):
        """Keep a listing; return the callbacks to call (lock held)."""
        self._instances = {i.external_id: i for i in instances}
        self._listed_at = started
        watchers, self._watchers = self._watchers, {}
        fire, keep, changed = [], {}, set()
        for external_id, entries in watchers.items():
            state = state_of(self._instances.get(external_id))
            for watch in entries:
                if watch.cancelled:
                    continue
                if watch.since > started:
                    # The listing began before the wait: it cannot tell.
                    keep.setdefault(external_id, []).append(watch)
                    continue
                if watch.seen_state is None and watch.kind == UP and \
                        state == driver_base.BUILDING:
                    watch.seen_state = state   # not listed yet: no news
                if watch.seen_state == state:
                    keep.setdefault(external_id, []).append(watch)
                    continue
                fire.append(watch.callback)
                if watch.kind == UP and state not in (
                        driver_base.BUILDING, GONE) or \
                        watch.kind == DOWN and state == GONE:
                    self._took[watch.kind].append(started - watch.since)
                    changed.add(external_id)
        self._watchers = keep
        # A wait's start is kept until the change awaited is seen: a flow
        # woken by its timer and parked again still waits since then.
        self._since = {external_id: since for external_id, since
                       in self._since.items() if external_id in keep
                       or external_id in self._instances
                       and external_id not in changed}
        if fire:
            self._quiet_since = started
        self._spacing = self.floor if fire else min(self.interval,
                                                    2 * self._spacing)
        return fire


class Watch:
    """A pending :meth:`InstanceCache.watch`."""

    def __init__(self, seen_state, callback, interrupt=False, kind=UP,
                 since=0.0):
        self.seen_state = seen_state
        self.callback = callback
        #: whether :meth:`InstanceCache.stop_waits` ends it
        self.interrupt = interrupt
        #: the change awaited (:data:`UP` or :data:`DOWN`), and since when
        self.kind = kind
        self.since = since
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


def state_of(instance):
    return instance.state if instance is not None else GONE
