"""The launcher: serves node requests with the launch and delete flows.

A pass runs when something changed: a flow of this process finished, or
the requests table changed (a new request, a release, from any process),
and at the latest every ``request_interval``. An idle launcher makes no
query on a SQLite file (a stat shows any commit); on another database it
reads the requests' marker less and less often while nothing changes, at
least once a second. A pass reads every node and
active request once, then:

- deletes nodes that are used, failed or aborted, held past their expiry,
  or ready past their label's ``max-ready-age``;
- settles pending requests: fulfilled when all their nodes are ready (the
  nodes go in-use), failed when a node failed, served again later when a
  node was aborted (the cloud's quota or capacity);
- serves new requests, oldest and highest priority (lowest number) first,
  from the first pool that serves all their labels and has quota for what
  ready spares do not cover; a request that fits nowhere now waits, and
  the pools it would use pause until the next pass; one that is not valid
  or that no such pool could ever hold is declined; a pass starts at most
  ``max_launches_per_pass`` launches;
- keeps ``min-ready`` spare nodes of each label.

Every ``cleanup_interval`` it lists each provider's instances and
resources and deletes those tagged as its own that no node owns, once
seen on two passes in a row.
"""

import collections
import logging
import threading
import time

from taskflow import states as tf_states

from fleetflow.db import api as db_api
from fleetflow.db import direct
from fleetflow.db import locks
from fleetflow.db import models
from fleetflow.drivers import base as driver_base
from fleetflow import exceptions
from fleetflow.execution import processes
from fleetflow import layout as ff_layout
from fleetflow import logutils
from fleetflow import node_states
from fleetflow import quota
from fleetflow import scheduler as ff_scheduler

LOG = logging.getLogger(__name__)

TICK = 0.05
#: seconds between looks at the layout file
LAYOUT_CHECK = 1.0
#: on a database whose commits only a query shows, the longest time
#: between two reads of the request marker while nothing changes
IDLE_MARKER_SPACING = 1.0
#: a pass starts no sooner than this many times its last duration after it
PASS_SHARE = 5


class Launcher:
    """Serves requests; see the module docstring.

    :param runner: the :class:`~fleetflow.execution.base.FlowRunner` that
        runs its flows (default: in this process).
    """

    def __init__(self, ctx, runner=None):
        self.ctx = ctx
        # The pass has connections of its own: it must not queue behind
        # the flows' workers.
        self.store = db_api.Store(ctx.new_engine())
        self.host = ctx.conf.host
        #: called when a request is fulfilled or fails (the ZooKeeper
        #: front end mirrors it)
        self.on_settled = None
        self.runner = runner or processes.make_runner(ctx)
        self.runner.on_done = self._flow_done
        self._wake = threading.Event()
        self._marker = None
        self._probe = direct.ChangeProbe(self.store.engine)
        self._marker_read = 0.0
        self._marker_spacing = TICK
        self._last_pass = 0.0
        self._last_cleanup = time.time()
        self._leak_candidates = {}
        self.leaked = collections.Counter()
        self.passes = 0
        self._pass_cost = 0.0
        #: CPU seconds this pass spent starting flows (posting them, with a
        #: jobboard), which do not count in its cost
        self._starting = 0.0
        #: whether the last pass left requests unserved (quota, delays)
        self._requests_waiting = True
        self.cleanup_passes = 0
        self._owner = None
        #: deletes started here of each node whose delete failed
        self._delete_tries = {}
        self._delete_wake = 0.0
        self._layout_file = ff_layout.FileWatch(
            ctx.conf.launcher.layout_file)
        self._reload = threading.Event()
        self._scheduler = ff_scheduler.Scheduler()
        self._scheduler.add_periodic(self._tick, TICK)
        self._scheduler.add_periodic(self._check_layout, LAYOUT_CHECK)

    def _owns(self, launcher):
        """Whether this launcher looks after what ``launcher`` started."""
        return self.runner.fleet_wide or launcher in (None, self.host)

    def start(self):
        """Start, resuming unfinished flows.

        :raises LockHeld: when another launcher runs the database's flows.
        """
        self._owner = self.runner.owner_lock()
        if self._owner is not None:
            self._owner.acquire()
        self.ctx.start()
        self.runner.start()
        resumed = self.runner.resume_all()
        LOG.info('Launcher %s started; %d unfinished flows resumed',
                 self.host, resumed)
        self._scheduler.start()

    def stop(self):
        """Start no new flow; stop running flows at a task boundary."""
        self._scheduler.stop()
        self.runner.stop()
        self.ctx.stop()
        self.store.engine.dispose()
        if self._owner is not None:
            self._owner.release()
        LOG.info('Launcher %s stopped', self.host)

    def wake(self):
        self._wake.set()

    def request_reload(self):
        """Reload the layout before the next pass (on SIGHUP)."""
        self._reload.set()

    def _check_layout(self):
        if self._layout_file.changed():
            self._reload.set()

    def reload_layout(self):
        """Reload the layout (see :func:`reload_layout`); a pass is due."""
        if reload_layout(self.ctx):
            self.runner.use_layout(self.ctx.layout)
            self.wake()

    def _flow_done(self, run):
        """A flow of this launcher's runner ended (``run``: its FlowRun).

        ``None`` when the runner cannot say which (flows that left the
        jobboard): a pass is due.
        """
        if run is None:
            self.wake()
            return
        settled = run.state == tf_states.SUCCESS and (
            run.name.startswith('delete-')
            or (run.name.startswith('launch-')
                and self.fulfil_now(run.node_id)))
        # A pass is due when a flow failed or left something to decide;
        # and when requests wait, for the quota or spare a flow freed.
        if not settled or self._requests_waiting:
            self.wake()

    def fulfil_now(self, node_id):
        """Fulfil the request of a node that just became ready, if it can.

        When its request's nodes are all ready, it is fulfilled at once,
        not at the next pass; any other outcome is left to the pass.

        :returns: whether the request was fulfilled.
        """
        try:
            node = self.store.find_node(node_id)
            if node is None or node['request_id'] is None:
                return False
            request = self.store.get_request(node['request_id'])
            nodes = self.store.list_nodes(request_id=request['id'])
            if (request['state'] == models.PENDING
                    and self._owns(request['launcher'])
                    and len(nodes) == len(request['labels'])
                    and all(n['state'] == node_states.READY for n in nodes)):
                return self._settle(request, nodes)
        except Exception:
            LOG.exception('[node %s] Fulfilling its request failed; the '
                          'next pass does', node_id)
        return False

    def _tick(self):
        if self._reload.is_set():
            self._reload.clear()
            self.reload_layout()
        now = time.time()
        if now - self._last_pass < PASS_SHARE * self._pass_cost:
            # A pass reads every node and request: with many of them,
            # passes are spaced so that they take a bounded share of the
            # process's CPU time, and the flows get the rest. Starting
            # flows is not counted: it is the flows' work, done once. Nor
            # is waiting (for the database, a lock, a busy machine's CPU),
            # which costs the flows nothing: counted, one pass that waited
            # 30 s held off the next for 150 s.
            return
        due = self._wake.is_set() or now - self._last_pass >= \
            self.ctx.conf.launcher.request_interval
        # Asked even when due: a read now is the next one's baseline.
        if self._requests_may_have_changed(now) or due:
            marker = self.store.request_marker()
            if marker != self._marker:
                self._marker_spacing = TICK
            else:
                self._marker_spacing = min(2 * self._marker_spacing,
                                           IDLE_MARKER_SPACING)
            self._marker_read = now
            if due or marker != self._marker:
                self._wake.clear()
                self._marker = marker
                self._last_pass = now
                self._starting = 0.0
                began = time.thread_time()
                self.run_pass()
                self._pass_cost = time.thread_time() - began \
                    - self._starting
        if now - self._last_cleanup >= self.ctx.conf.launcher \
                .cleanup_interval:
            self._last_cleanup = now
            self.cleanup_leaks()

    def _requests_may_have_changed(self, now):
        """Whether to read the request marker, at ``now``.

        On a SQLite file, only when a commit was made since the last look
        (:class:`~fleetflow.db.direct.ChangeProbe`): an idle launcher makes
        no query. Elsewhere, every tick after a change, then less and less
        often while nothing changes, down to every
        :data:`IDLE_MARKER_SPACING`.
        """
        if self._probe.visible:
            return self._probe.changed()
        return now - self._marker_read >= self._marker_spacing

    # The pass

    def run_pass(self):
        try:
            with self.runner.pass_turn():
                self._pass()
        except locks.LockTimeout as e:
            LOG.info('Pass skipped: %s', e)
        except Exception:
            LOG.exception('Launcher pass failed')

    def _pass(self):
        nodes = self.store.list_nodes()
        requests = self.store.list_requests(
            states=[models.REQUESTED, models.PENDING])
        self._handle_nodes(nodes)
        self.ctx.retire_providers({node['provider'] for node in nodes})
        usage = quota.Usage(self.ctx, _counts(nodes))
        self._settle_pending(requests, nodes)
        budget = self._serve_new(requests, nodes, usage)
        self._keep_min_ready(nodes, usage, budget)
        self.ctx.stats.pass_gauges(self.ctx.layout, nodes, requests)
        self.passes += 1

    def _handle_nodes(self, nodes):
        now = time.time()
        conf = self.ctx.conf.launcher
        deleting = {}
        next_delete = None
        for node in nodes:
            if self.runner.is_running(node['id']):
                continue
            state = node['state']
            if node['provider'] not in self.ctx.layout.providers \
                    and self._drain(node):
                continue
            if state in node_states.TO_DELETE:
                self._start(self.runner.delete, node)
            elif state == node_states.DELETING:
                # The node's last delete failed: deleted again after a
                # wait that doubles with each failure seen here.
                tries = self._delete_tries.get(node['id'], 0)
                deleting[node['id']] = tries
                due = node['state_time'] + min(
                    conf.delete_retry_interval,
                    conf.delete_retry_initial * 2 ** min(tries, 32))
                if now >= due:
                    deleting[node['id']] = tries + 1
                    self._start(self.runner.delete, node)
                else:
                    next_delete = min(next_delete or due, due)
            elif state == node_states.HOLD:
                if _hold_expiry(node, self.ctx.layout) <= now:
                    self._node_log(node).info('Hold expired')
                    self._cas(node, node_states.USED, [node_states.HOLD])
            elif state == node_states.READY and node['request_id'] is None:
                max_age = self.ctx.layout.labels.get(
                    node['label'], {}).get('max-ready-age')
                if max_age and now - node['ready_at'] > max_age:
                    if self.store.retire_spare(node['id']):
                        self._node_log(node).info(
                            'Ready for longer than max-ready-age (%ss); '
                            'replacing it', max_age)
            elif state == node_states.BUILDING and \
                    self._owns(node['launcher']):
                self._start(self.runner.launch, node)
        self._delete_tries.update(deleting)
        for node_id in set(self._delete_tries) - set(deleting):
            if not self.runner.is_running(node_id):
                del self._delete_tries[node_id]
        if next_delete is not None and not (
                now < self._delete_wake <= next_delete):
            # A pass is due when the next delete is (one timer at a time).
            self._delete_wake = next_delete
            self._scheduler.call_at(next_delete, self.wake)

    def _drain(self, node):
        """Retire a node of a provider the layout no longer has.

        A spare is deleted, an unfinished launch aborted (its request is
        served again elsewhere); other nodes are deleted as usual once
        released. :returns: whether the node was handled here.
        """
        state = node['state']
        if state == node_states.READY and node['request_id'] is None:
            if self._cas(node, node_states.USED, [node_states.READY]):
                self._node_log(node).info('Its provider %s left the '
                                          'layout: deleting it',
                                          node['provider'])
            return True
        if state == node_states.BUILDING:
            if self._owns(node['launcher']):
                self._cas(node, node_states.ABORTED, [node_states.BUILDING])
            return True
        return False

    def _settle_pending(self, requests, nodes):
        by_request = collections.defaultdict(list)
        for node in nodes:
            if node['request_id']:
                by_request[node['request_id']].append(node)
        for request in requests:
            if request['state'] != models.PENDING or \
                    not self._owns(request['launcher']):
                continue
            self._settle(request, by_request[request['id']])

    def _settle(self, request, nodes):
        states = {node['state'] for node in nodes}
        failed = [n for n in nodes if n['state'] == node_states.FAILED]
        if failed:
            reason = 'node %s failed: %s' % (failed[0]['id'],
                                             failed[0]['failure'])
            self.store.detach_nodes(request['id'])
            self._request_state(request, models.REQUEST_FAILED,
                                reason=reason)
            self._settled()
        elif node_states.ABORTED in states or len(nodes) != len(
                request['labels']) or states - node_states.SERVING:
            self.store.detach_nodes(request['id'])
            self._request_state(
                request, models.REQUESTED, reason='a node was aborted '
                '(cloud quota or capacity); served again shortly',
                provider=None, pool=None, launcher=None,
                not_before=time.time()
                + self.ctx.conf.launcher.aborted_request_delay)
        elif states == {node_states.READY} and self.store.fulfil_request(
                request['id'], [node['id'] for node in nodes]):
            LOG.info('[request %s] Fulfilled with nodes %s', request['id'],
                     ', '.join(n['id'] for n in nodes))
            self._settled()
            return True
        return False

    def _settled(self):
        if self.on_settled is not None:
            self.on_settled()

    def _serve_new(self, requests, nodes, usage):
        """Plan and serve new requests; return the launches left to start.

        At most ``max_launches_per_pass`` launches are planned (a request
        is served whole); the next pass serves the rest.
        """
        now = time.time()
        budget = self.ctx.conf.launcher.max_launches_per_pass
        spares = collections.defaultdict(list)
        for node in nodes:
            if node['state'] == node_states.READY and \
                    node['request_id'] is None:
                spares[(node['provider'], node['pool'], node['label'])] \
                    .append(node)
        paused = set()
        plans = []
        # the layout's max-concurrency: requests a provider serves at once
        serving = collections.Counter(
            request['provider'] for request in requests
            if request['state'] == models.PENDING
            and self._owns(request['launcher']))
        for request in requests:
            if request['state'] != models.REQUESTED or \
                    (request['not_before'] or 0) > now:
                continue
            if budget <= 0:
                self.wake()
                break
            candidates, reason = self._pools_for(request, usage)
            if reason:
                self._decline(request, reason)
                continue
            chosen = None
            for provider, pool in candidates:
                key = (provider['name'], pool['name'])
                if key in paused or 0 < provider['max-concurrency'] <= \
                        serving[key[0]]:
                    continue
                reuse, launch = _split(request['labels'], spares, key)
                if usage.fits(key[0], key[1], launch):
                    chosen = (key, reuse, launch)
                    break
            if chosen is None:
                paused.update((p['name'], pl['name'])
                              for p, pl in candidates)
                continue
            key, reuse, launch = chosen
            budget -= len(launch)
            serving[key[0]] += 1
            for label in launch:
                usage.take(key[0], key[1], self.ctx.provider(key[0])
                           .quota_for_label(key[1], label))
            for node in reuse:
                spares[key + (node['label'],)].remove(node)
            plans.append(dict(request_id=request['id'], provider=key[0],
                              pool=key[1], launcher=self.host,
                              reuse=[node['id'] for node in reuse],
                              launch=launch))
        self._requests_waiting = len(plans) < sum(
            1 for request in requests if request['state'] == models.REQUESTED)
        self._serve(plans)
        return budget

    def _serve(self, plans):
        """Apply this pass's decisions in one transaction, then launch."""
        if not plans:
            return
        served = self.store.serve_requests(plans)
        for plan, nodes in zip(plans, served):
            if nodes is None:
                continue
            for node in nodes:
                self._start(self.runner.launch, node)
            LOG.info('[request %s] Served by %s/%s: %d ready nodes reused, '
                     '%d launched', plan['request_id'], plan['provider'],
                     plan['pool'], len(plan['reuse']), len(nodes))
            if not nodes:
                self.wake()

    def _pools_for(self, request, usage):
        """The pools that could ever serve ``request``, or why none can.

        :returns: ``(pools, None)``, or ``([], reason)`` for a request that
            is not valid (a row the client did not write), has an unknown
            label, or has more nodes than the total limits of every pool
            serving its labels hold.
        """
        labels = request['labels']
        problem = db_api.request_problem(
            labels, request['priority'], self.ctx.conf.requests.max_nodes)
        if problem:
            return [], problem
        serving = list(self.ctx.layout.pools_serving(labels))
        candidates = [(provider, pool) for provider, pool in serving
                      if usage.could_ever_fit(provider['name'], pool['name'],
                                              labels)]
        if candidates:
            return candidates, None
        unknown = [label for label in labels
                   if label not in self.ctx.layout.labels]
        if unknown:
            return [], 'unknown label(s): %s' % ', '.join(unknown)
        if not serving:
            return [], ('no provider pool serves all of: %s'
                        % ', '.join(labels))
        return [], ('%d nodes are more than any pool that serves their '
                    'labels can ever hold (%s)' % (len(labels), '; '.join(
                        '%s/%s %s' % (provider['name'], pool['name'],
                                      _limits(usage.total(provider['name'],
                                                          pool['name'])))
                        for provider, pool in serving)))

    def _decline(self, request, reason):
        LOG.warning('[request %s] Declined: %s', request['id'], reason)
        self._request_state(request, models.REQUEST_FAILED, reason=reason)

    def _keep_min_ready(self, nodes, usage, budget):
        """Launch spares up to min-ready, at most ``budget`` of them."""
        have = collections.Counter(
            node['label'] for node in nodes
            if node['state'] in node_states.SPARE
            and node['request_id'] is None)
        for name, label in self.ctx.layout.labels.items():
            for _ in range(label['min-ready'] - have[name]):
                if budget <= 0:
                    self.wake()
                    return
                for provider, pool in self.ctx.layout.pools_serving([name]):
                    if usage.fits(provider['name'], pool['name'], [name]):
                        node = self.store.create_node(
                            name, provider['name'], pool['name'],
                            launcher=self.host)
                        usage.take(provider['name'], pool['name'],
                                   self.ctx.provider(provider['name'])
                                   .quota_for_label(pool['name'], name))
                        self._start(self.runner.launch, node)
                        budget -= 1
                        break

    # Leaks

    def cleanup_leaks(self):
        """Delete instances and resources that no node owns.

        What is tagged as a provider's but owned by no node is deleted once
        it has been seen on two passes in a row (a launch may be in
        between).
        """
        nodes = {node['id']: node for node in self.store.list_nodes()}
        for name, provider in self.ctx.providers.items():
            try:
                self._cleanup_provider(name, provider, nodes)
            except Exception:
                LOG.exception('Leak cleanup of provider %s failed', name)
        self.cleanup_passes += 1

    def _cleanup_provider(self, name, provider, nodes):
        driver = provider.driver
        if hasattr(driver, 'check_hosts'):
            driver.check_hosts()
        found = {}
        for instance in driver.list_instances():
            if not driver.owned_metadata(instance.metadata) or \
                    instance.state == driver_base.DELETING:
                continue
            node = nodes.get(instance.node_id)
            if node is None or (node['external_id'] not in (
                    None, instance.external_id)
                    and node['state'] != node_states.BUILDING):
                found[('instance', instance.external_id)] = instance
        for resource in driver.list_resources():
            if resource.metadata.get(driver_base.META_NODE_ID) not in nodes:
                found[(resource.resource_type, resource.resource_id)] = \
                    resource
        previous = self._leak_candidates.get(name, set())
        self._leak_candidates[name] = set(found) - previous
        for key in set(found) & previous:
            kind, ident = key
            LOG.warning('Deleting leaked %s %s of provider %s', kind, ident,
                        name)
            try:
                if kind == 'instance':
                    driver.delete_instance(ident)
                else:
                    driver.delete_resource(found[key])
            except driver_base.NotFound:
                continue
            self.leaked[(name, kind)] += 1
            self.ctx.stats.leaked(name, kind)

    # Helpers

    def _start(self, start_flow, node):
        began = time.thread_time()
        try:
            start_flow(node)
        except exceptions.FleetflowError as e:
            self._node_log(node).debug('Flow not started: %s', e)
        self._starting += time.thread_time() - began

    def _cas(self, node, state, expected):
        try:
            self.store.set_node_state(node['id'], state, expected=expected)
            return True
        except exceptions.NodeStateConflict:
            return False

    def _request_state(self, request, state, **fields):
        try:
            self.store.set_request_state(request['id'], state,
                                         expected=[request['state']],
                                         **fields)
        except exceptions.NodeStateConflict:
            pass

    def _node_log(self, node):
        return logutils.node_logger(LOG, node['id'], node['request_id'])


def reload_layout(ctx):
    """Load the layout file again; keep the running layout if it is bad.

    A valid layout applies from the next pass; a bad one is logged with
    the problems ``fleetflow config validate`` shows.

    :returns: whether the new layout was applied.
    """
    path = ctx.conf.launcher.layout_file
    try:
        layout = ff_layout.load(path)
        said = ff_layout.changes(ctx.layout, layout)
        ctx.apply_layout(layout)
    except exceptions.ConfigError as e:
        LOG.error('Layout not reloaded; the running one is kept: %s', e)
        return False
    LOG.info('Layout reloaded from %s: %s', path,
             ', '.join(said) or 'nothing changed')
    return True


def _hold_expiry(node, layout):
    """When a held node is released: its own expiry or max-hold-age."""
    expiry = node['hold_expires'] or float('inf')
    if layout.max_hold_age:
        expiry = min(expiry, node['state_time'] + layout.max_hold_age)
    return expiry


def _limits(quota):
    """``instances 5, cores 8`` for the limited fields of a quota."""
    return ', '.join('%s %s' % (field, value)
                     for field, value in quota.to_dict().items()
                     if value is not None) or 'unlimited'


def _counts(nodes):
    counter = collections.Counter(
        (n['provider'], n['pool'], n['label'], n['state']) for n in nodes)
    return [key + (count,) for key, count in counter.items()]


def _split(labels, spares, key):
    """Split labels into spares of pool ``key`` to reuse and to launch."""
    taken = collections.defaultdict(int)
    reuse, launch = [], []
    for label in labels:
        pool_spares = spares.get(key + (label,), [])
        if taken[label] < len(pool_spares):
            reuse.append(pool_spares[taken[label]])
            taken[label] += 1
        else:
            launch.append(label)
    return reuse, launch
