"""statsd metrics with nodepool's key names; off unless configured."""

import statsd


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
