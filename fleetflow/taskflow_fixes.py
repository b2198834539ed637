"""Fixes of TaskFlow bugs that fleetflow's flows run into.

Applied once, when :mod:`fleetflow.persistence` is imported (every process
that saves or loads flows does).

``RetryDetail.from_dict`` (taskflow 6.5.0 and earlier) decodes a retry's
history with a loop variable that shadows the value of each entry, so an
entry that has failures comes back with its last failure (as a dict) in
place of the value the retry returned. Every retry history loaded from
persistence is affected: a flow resumed after a restart, and any save
whose backend returns what it read back. fleetflow's polling retries
return their deadline as that value and read it back from the history
(:class:`fleetflow.retries.PollUntilDeadline`), so a resumed poll got a
dict for a deadline, failed, and cost its node a launch attempt.
"""

from taskflow.persistence import models
from taskflow.types import failure as tf_failure


def _decode_results(results):
    return [(data, {name: tf_failure.Failure.from_dict(failure)
                    for name, failure in failures.items()})
            for data, failures in results or []]


def _retry_detail_from_dict(cls, data):
    obj = super(models.RetryDetail, cls).from_dict(data)
    obj.results = _decode_results(obj.results)
    return obj


def apply():
    """Install the fixes (idempotent)."""
    models.RetryDetail.from_dict = classmethod(_retry_detail_from_dict)


apply()
