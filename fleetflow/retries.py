"""fleetflow's retry controllers.

They replace hand-written retry and polling loops: a controller decides,
after a failure in its subflow, whether to undo the subflow and run it
again. The runner parks a flow whose failure says when to try again
(:class:`~fleetflow.exceptions.StillWaiting`, a rate limit), so a waiting
node holds no thread.
"""

import time

from taskflow.patterns import linear_flow
from taskflow import retry

from fleetflow.drivers import base as driver_base
from fleetflow import exceptions

#: failures that are not a failed attempt: try again when the cloud allows
NOT_AN_ATTEMPT = (driver_base.RateLimitError,)
#: failures that abort the launch at once, without spending an attempt:
#: the cloud has no room for the node now (quota, capacity)
ABORTING = (driver_base.QuotaError, driver_base.CapacityError)


def _last_failures(history):
    if not len(history):
        return []
    return [failure for _name, failure in history.outcomes_iter(-1)]


class LaunchAttempts(retry.Retry):
    """Try a launch attempt up to ``attempts`` times.

    Provides the number of the attempt about to run. A rate-limit error is
    tried again without counting as an attempt; a quota or capacity error
    (:data:`ABORTING`) reverts at once (the node is aborted and its request
    served again later); any other failure is an attempt spent.
    """

    def __init__(self, attempts, name=None, provides='attempt', **kwargs):
        super().__init__(name=name, provides=provides, **kwargs)
        self.attempts = attempts

    @staticmethod
    def _spent(history):
        return sum(
            1 for index in range(len(history))
            if not any(f.check(*NOT_AN_ATTEMPT)
                       for _n, f in history.outcomes_iter(index)))

    def execute(self, history, *args, **kwargs):
        return self._spent(history) + 1

    def on_failure(self, history, *args, **kwargs):
        failures = _last_failures(history)
        if any(f.check(*ABORTING) for f in failures):
            return retry.REVERT_ALL
        if failures and all(f.check(*NOT_AN_ATTEMPT) for f in failures):
            return retry.RETRY
        if self._spent(history) < self.attempts:
            return retry.RETRY
        return retry.REVERT_ALL

    def revert(self, history, *args, **kwargs):
        pass


class PollUntilDeadline(retry.Retry):
    """Run a poll task again while it is still waiting, until a deadline.

    Provides the deadline (``timeout`` seconds after the first poll), which
    the poll task compares with the clock to raise its own, precise,
    timeout error. Only :class:`~fleetflow.exceptions.StillWaiting` is
    retried; the subflow should hold only the idempotent poll task, since
    a retry reverts everything in it.
    """

    def __init__(self, timeout, name=None, provides='deadline', poll=None,
                 **kwargs):
        super().__init__(name=name, provides=provides, **kwargs)
        self.timeout = timeout
        #: the poll task of the subflow
        self.poll = poll

    def execute(self, history, *args, **kwargs):
        if len(history):
            return history[0][0]
        return time.time() + self.timeout

    def on_failure(self, history, *args, **kwargs):
        failures = _last_failures(history)
        if failures and all(f.check(exceptions.StillWaiting)
                            for f in failures):
            return retry.RETRY
        return retry.REVERT

    def revert(self, history, *args, **kwargs):
        pass


def polled(name, timeout, task_class, task_name, rebind=None, **kwargs):
    """A subflow that runs one poll task alone until ``timeout`` passes.

    The task (``task_class(name=task_name, **kwargs)``) gets the deadline
    of the subflow's :class:`PollUntilDeadline`, named ``<name>-deadline``,
    which knows its task (``poll``; see :func:`waiting_before_poll`),
    as its ``deadline`` argument.
    """
    deadline = '%s_deadline' % name.replace('-', '_')
    task = task_class(name=task_name,
                      rebind=dict(rebind or {}, deadline=deadline), **kwargs)
    return linear_flow.Flow(name, retry=PollUntilDeadline(
        timeout, name='%s-deadline' % name, provides=deadline,
        poll=task)).add(task)


def waiting_before_poll(engine, details):
    """Why the poll about to run would only find it must wait, or None.

    Called when a retry of ``engine`` succeeded (``details`` of that
    notification): when it is a :class:`PollUntilDeadline` whose poll task
    can tell without waiting (a ``waiting`` method), the poll is asked.
    A flow parked here (or that waits here) is not failed, reverted and
    retried for the poll's :class:`~fleetflow.exceptions.StillWaiting`:
    its poll runs once the awaited change is seen.
    """
    graph = engine.compilation.execution_graph
    name = details['retry_name']
    controller = next((atom for atom in graph if atom.name == name), None)
    poll = getattr(controller, 'poll', None)
    waiting = getattr(poll, 'waiting', None)
    if waiting is None:
        return None
    return waiting(**engine.storage.fetch_mapped_args(
        poll.rebind, atom_name=poll.name, optional_args=poll.optional))
