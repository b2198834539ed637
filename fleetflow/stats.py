"""statsd metrics with nodepool's key names; off unless configured.

With ``[stats] statsd_prefix = nodepool`` the whole tree is nodepool's:
the keys below are the ones its operation guide lists, so its Grafana
dashboards work unchanged.
"""

import collections
import logging
import time

import statsd
from taskflow import states

from fleetflow.drivers import base as driver_base
from fleetflow import exceptions
from fleetflow.execution import taskflow_overrides
from fleetflow import node_states

LOG = logging.getLogger(__name__)

#: the requestor of spares' launches (nodepool's min-ready requests')
MIN_READY_REQUESTOR = 'NodePool:min-ready'

#: Launch errors with a stat key, the most specific classes first.
STAT_ERRORS = (exceptions.KeyscanError, exceptions.LaunchTimeout,
               exceptions.InstanceErrorState, driver_base.QuotaError,
               driver_base.CapacityError, driver_base.DriverError,
               exceptions.LaunchError)


def key_part(name):
    """``name`` fit for one part of a key, as nodepool makes it."""
    return str(name).replace('.', '_').replace(':', '_')


class Stats:
    """Sends counters, timers and gauges when ``[stats] statsd_host`` is set.

    Launches: ``launch.<result>``, ``launch.provider.<p>.<result>``,
    ``launch.provider.<p>.<az>.<result>`` and
    ``launch.requestor.<r>.<result>`` (``NodePool_min-ready`` for
    spares; timer and counter; results are
    nodepool's: ``ready``, ``error.quota``, ``error.capacity``,
    ``error.status``, ``error.servercreatetimeout``, ``error.keyscan``,
    ``error.unknown``). Leaks: ``provider.<p>.leaked.<kind>s``. Gauges each
    pass: ``nodes.<state>``, ``provider.<p>.nodes.<state>``,
    ``label.<l>.nodes.<state>`` (every state, zero included),
    ``provider.<p>.max_servers`` and
    ``provider.<p>.pool.<pool>.addressable_requests``.
    """

    def __init__(self, conf):
        self.client = None
        #: the gauges of the last pass, sent as 0 once they are gone
        self._gauges = set()
        if conf.stats.statsd_host:
            self.client = statsd.StatsClient(
                conf.stats.statsd_host, conf.stats.statsd_port,
                prefix=conf.stats.statsd_prefix or None)

    def launch_result(self, provider, az, requestor, result, seconds):
        """Count a launch result (``ready`` or ``error.<kind>``).

        ``az`` and ``requestor`` (None when unknown) add their keys;
        ``seconds`` (None when unknown: only counted) is its timer.
        """
        if self.client is None:
            return
        keys = ['launch.%s' % result,
                'launch.provider.%s.%s' % (provider, result)]
        if az:
            keys.append('launch.provider.%s.%s.%s'
                        % (provider, key_part(az), result))
        if requestor:
            keys.append('launch.requestor.%s.%s'
                        % (key_part(requestor), result))
        with self.client.pipeline() as pipe:
            for key in keys:
                if seconds is not None:
                    pipe.timing(key, seconds * 1000)
                pipe.incr(key)

    def leaked(self, provider, kind, count=1):
        """Count leaked ``kind`` (``instance``, ``port``...) deleted."""
        if self.client is not None:
            self.client.incr('provider.%s.leaked.%ss' % (provider, kind),
                             count)

    def pass_gauges(self, layout, nodes, requests):
        """Send the gauges of a pass over ``nodes`` and open ``requests``."""
        if self.client is None:
            return
        gauges = collections.Counter()
        for state in node_states.ALL:
            gauges['nodes.%s' % state] = 0
            for provider in layout.providers:
                gauges['provider.%s.nodes.%s' % (provider, state)] = 0
            for label in layout.labels:
                gauges['label.%s.nodes.%s' % (label, state)] = 0
        for node in nodes:
            for key in ('nodes.%s' % node['state'],
                        'provider.%s.nodes.%s' % (node['provider'],
                                                  node['state']),
                        'label.%s.nodes.%s' % (node['label'],
                                               node['state'])):
                gauges[key] += 1
        for name, provider in layout.providers.items():
            gauges['provider.%s.max_servers' % name] = sum(
                pool.get('max-servers') or 0 for pool in provider['pools'])
        for provider, pool in layout.pools():
            served = {label['name'] for label in pool['labels']}
            gauges['provider.%s.pool.%s.addressable_requests' % (
                provider['name'], pool['name'])] = sum(
                    1 for request in requests
                    if set(request['labels']) <= served)
        for key in self._gauges - set(gauges):
            gauges[key] = 0
        self._gauges = {key for key, value in gauges.items() if value}
        with self.client.pipeline() as pipe:
            for key, value in gauges.items():
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


class LaunchResults(taskflow_overrides.Listener):
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

    def on_flow(self, state, details):
        storage = self.engine.storage
        if not storage.flow_name.startswith('launch'):
            return
        try:
            result = 'ready' if state == states.SUCCESS else stat_key(
                storage.get_execute_failures().values())
            store = self._ctx.store
            node = store.find_node(storage.fetch('node_id')) or {}
            # a spare is launched for min-ready, as nodepool names it
            request = {'requestor': MIN_READY_REQUESTOR}
            if node.get('request_id'):
                try:
                    request = store.get_request(node['request_id'])
                except exceptions.FleetflowError:
                    request = {}
            seconds = (time.time() - node['created_at']
                       if node else None)
            self._ctx.stats.launch_result(
                storage.fetch('provider'), node.get('az'),
                request.get('requestor'), result, seconds)
        except Exception:
            LOG.exception('Sending the stats of flow %s failed',
                          storage.flow_name)
