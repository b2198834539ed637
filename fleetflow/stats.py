"""statsd metrics with nodepool's key names; off unless configured."""

import logging
import time

import statsd
from taskflow.listeners import base as listener_base
from taskflow import states

from fleetflow.drivers import base as driver_base
from fleetflow import exceptions

LOG = logging.getLogger(__name__)

#: Launch errors with a stat key, the most specific classes first.
STAT_ERRORS = (exceptions.HostKeyMismatch, exceptions.KeyscanError,
               exceptions.LaunchTimeout, exceptions.InstanceErrorState,
               driver_base.QuotaError, driver_base.CapacityError,
               driver_base.RateLimitError, driver_base.NotFound,
               driver_base.DriverError, exceptions.LaunchError)


class Stats:
    """Sends counters, timers and gauges when ``[stats] statsd_host`` is set.

    Keys follow nodepool: ``launch.ready``, ``launch.error.<kind>`` (also
    per provider and label under ``provider.<name>.`` and ``label.<name>.``),
    ``nodes.<state>``, ``provider.<name>.nodes.<state>``,
    ``label.<name>.nodes.<state>``, ``provider.<name>.leaked.<kind>``.
    """

    def __init__(self, conf):
        self.client = None
        if conf.stats.statsd_host:
            self.client = statsd.StatsClient(
                conf.stats.statsd_host, conf.stats.statsd_port,
                prefix=conf.stats.statsd_prefix)

    def launch_result(self, provider, label, result, seconds):
        """Count a launch result (``ready`` or ``error.<kind>``).

        ``seconds`` (None when unknown: only counted) is its timer.
        """
        if self.client is None:
            return
        for scope in ('', 'provider.%s.' % provider, 'label.%s.' % label):
            key = '%slaunch.%s' % (scope, result)
            if seconds is not None:
                self.client.timing(key, seconds * 1000)
            self.client.incr(key)

    def leaked(self, provider, kind, count=1):
        if self.client is not None:
            self.client.incr('provider.%s.leaked.%s' % (provider, kind),
                             count)

    def gauges(self, values):
        """Send ``{key: value}`` gauges in one packet."""
        if self.client is None:
            return
        with self.client.pipeline() as pipe:
            for key, value in values.items():
                pipe.gauge(key, value)


def stat_key(failures):
    """The ``error.<kind>`` key of the failures that reverted a launch.

    A failure restored from a logbook knows its exception's class names
    only, which :data:`STAT_ERRORS` are matched against.
    """
    for failure in failures:
        key = getattr(failure.exception, 'stat_key', None)
        if key:
            return key
        cls = failure.check(*STAT_ERRORS)
        if cls is not None:
            return cls.stat_key
    return 'error.unknown'


class LaunchResults(listener_base.Listener):
    """Sends ``launch.ready`` or ``launch.error.<kind>`` when a launch ends.

    Registered on the engine of every launch flow, wherever it runs (a
    launcher's runner or a conductor), and timed from the node's creation
    (when it was asked for).
    """

    def __init__(self, engine, ctx):
        super().__init__(engine, task_listen_for=(),
                         flow_listen_for=(states.SUCCESS, states.REVERTED),
                         retry_listen_for=())
        self._ctx = ctx

    def _flow_receiver(self, state, details):
        storage = self._engine.storage
        if not storage.flow_name.startswith('launch'):
            return
        try:
            result = 'ready' if state == states.SUCCESS else stat_key(
                storage.get_execute_failures().values())
            node = self._ctx.store.find_node(storage.fetch('node_id'))
            seconds = time.time() - node['created_at'] if node else None
            self._ctx.stats.launch_result(storage.fetch('provider'),
                                          storage.fetch('label'), result,
                                          seconds)
        except Exception:
            LOG.exception('Sending the stats of flow %s failed',
                          storage.flow_name)
