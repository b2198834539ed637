"""A small thread-safe limiter that spaces calls to one API.

A provider's ``rate`` (seconds between API calls) is honoured by one
:class:`RateLimiter` per provider, shared by every thread that calls it::

    limiter = RateLimiter(provider['rate'])
    with limiter:
        client.list_servers()

Callers get their turn in the order they ask for it; the lock is held only
to book a slot, never while sleeping, so a waiting thread does not hold up
the others' bookings.
"""

import threading
import time


class RateLimiter:
    """Keeps the starts of calls at least ``delay`` seconds apart.

    :param delay: seconds between two calls; 0 or None disables the limit.
    :param clock: a monotonic clock (for tests).
    :param sleep: the sleep function (for tests).
    """

    def __init__(self, delay, clock=time.monotonic, sleep=time.sleep):
        delay = float(delay or 0)
        if delay < 0:
            raise ValueError('delay must not be negative: %r' % delay)
        self.delay = delay
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = None

    def reserve(self):
        """Book the next free slot and return the seconds until it."""
        if not self.delay:
            return 0.0
        with self._lock:
            now = self._clock()
            slot = now if self._next is None else max(now, self._next)
            self._next = slot + self.delay
        return slot - now

    def wait(self):
        """Block until this caller may make its call.

        :returns: the seconds it waited.
        """
        delay = self.reserve()
        if delay > 0:
            self._sleep(delay)
        return delay

    def __enter__(self):
        self.wait()
        return self

    def __exit__(self, *exc_info):
        return False

    def __call__(self, func):
        """Decorate ``func`` so that every call to it waits its turn."""
        def limited(*args, **kwargs):
            with self:
                return func(*args, **kwargs)
        limited.__name__ = getattr(func, '__name__', 'limited')
        limited.__doc__ = getattr(func, '__doc__', None)
        return limited
