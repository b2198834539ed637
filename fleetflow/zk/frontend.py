"""The ZooKeeper front end's passes (see the package's docstring).

A pass, every ``[zookeeper] interval`` at most and at once when a request
or node znode changes:

- follows the requests this process holds the lock of: when the store
  has fulfilled one, writes a Node znode for each of its nodes (``ready``,
  allocated to it) and fulfils it; when the store failed it, declines it;
  when Zuul deleted it, releases its store request;
- takes new requests in nodepool's order (precedence, relative priority,
  sequence): one that a pool of the layout serves becomes a store request
  linked to the znode, and the request is ``pending`` with its lock held
  until it ends; one that none serves is declined for every pool of this
  process (failed once every registered pool declined it), unless another
  registered pool could serve it;
- mirrors Zuul's use of fleetflow's Node znodes into the store, touching
  none that someone else holds the lock of: ``used`` and ``in-use`` ones
  (whose holder's lock vanished), and ``ready`` ones whose request is gone,
  are locked, marked ``deleting``, and their nodes ``used`` in the store,
  which the launcher deletes with its delete flow; the znode goes once the
  node's row is gone; ``hold`` becomes a hold in the store, ending at
  ``hold_expiration`` (bounded by the layout's ``max-hold-age``); an
  in-use node whose Node znode is gone is ``used`` in the store too.

Every ``[zookeeper] cleanup_interval``, and at start, it takes the
``pending`` requests that nobody holds the lock of (their launcher died):
one that this fleet's store serves is taken up again, any other is reset
to ``requested``; and it removes the locks of requests that are gone,
once older than ``[zookeeper] stale_lock_age``.
"""

from concurrent import futures
import functools
import logging
import threading
import time

from kazoo import exceptions as kze
from kazoo.protocol import states as kazoo_states
from kazoo.recipe import cache as kazoo_cache

from fleetflow.db import api as db_api
from fleetflow.db import models
from fleetflow import exceptions
from fleetflow import node_states
from fleetflow.zk import components
from fleetflow.zk import connection
from fleetflow.zk import records

LOG = logging.getLogger(__name__)

#: seconds between two passes at least, and their share of the time
MIN_GAP = 0.02
PASS_SHARE = 2
#: ZooKeeper calls the front end makes at once (taking requests' locks,
#: fulfilling them)
WORKERS = 8


# What a Node of fleetflow's needs (node_action)
REMOVE = 'remove'
LINK = 'link'
RETIRE = 'retire'
HOLD = 'hold'


def node_action(node_id, data, row, requests, locked_here):
    """What a Node of fleetflow's that nobody else holds needs, or None.

    ``data`` is the Node, ``row`` its node in the store (None: deleted),
    ``requests`` the ids of the NodeRequests that exist, ``locked_here``
    whether this process holds the Node's lock.

    - :data:`REMOVE` its znode: its node is deleted, or the node has
      another Node (made twice);
    - :data:`LINK` it to its node (made before a crash, not yet linked);
    - :data:`RETIRE` it (``deleting``, its node ``used``): Zuul used it,
      or its lock vanished while in use, or it is ready for a request that
      is gone, or its node is on its way out;
    - :data:`HOLD` its node as Zuul held it.
    """
    state = data.get('state')
    if row is None or (row['zk_node'] not in (None, node_id)):
        return REMOVE
    if row['zk_node'] is None:
        return LINK
    if state == records.DELETING and locked_here and \
            row['state'] in node_states.DOOMED:
        return None
    if state in (records.USED, records.IN_USE, records.DELETING) or (
            state == records.READY
            and data.get('allocated_to') not in requests) or \
            row['state'] in node_states.DOOMED:
        return RETIRE
    if state == records.HOLD and row['state'] != node_states.HOLD:
        return HOLD
    return None


def start_for(ctx, service):
    """The started front end of ``service`` when ZooKeeper is set, or None.

    ZooKeeper is set when the layout names ``zookeeper-servers``.
    ``service`` is what ``fleetflow-launcher`` runs: a launcher, or a
    jobboard service whose ``launcher`` may be None (a conductor only).
    """
    settings = getattr(ctx.layout, 'zookeeper', None)
    launcher = getattr(service, 'launcher', service)
    if not settings or launcher is None:
        return None
    frontend = Frontend(ctx, launcher, settings)
    frontend.start()
    return frontend


class Frontend:
    """Serves NodeRequests from ZooKeeper through the node store."""

    def __init__(self, ctx, launcher, settings):
        self.ctx = ctx
        self.conf = ctx.conf.zookeeper
        self.launcher = launcher
        self.settings = settings
        self.store = db_api.Store(ctx.new_engine())
        self.client = None
        self.registry = None
        self._caches = {}
        #: NodeRequest id -> (its lock, the store request's id)
        self.held = {}
        #: Node id -> the lock this process holds on it
        self.node_locks = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._session_lost = False
        self._last_cleanup = 0.0
        self._started = time.time()
        self._thread = None
        self._workers = futures.ThreadPoolExecutor(
            WORKERS, thread_name_prefix='zookeeper')

    # Life

    def start(self):
        self.client = connection.connect(self.settings)
        self.client.add_listener(self._session_state)
        self.registry = components.Registry(self.client, self.ctx.conf.host,
                                            self.ctx.layout)
        self.registry.register()
        for root in (connection.REQUESTS, connection.NODES):
            cache = kazoo_cache.TreeCache(self.client, root)
            loaded = threading.Event()
            cache.listen(functools.partial(self._cache_event, loaded))
            cache.start()
            # The first pass takes up the requests of an earlier life:
            # it must see them all.
            if not loaded.wait(self.settings['timeout']):
                raise exceptions.ConfigError(
                    'zookeeper-servers: %s not read within %ss'
                    % (root, self.settings['timeout']))
            self._caches[root] = cache
        self.launcher.on_settled = self._wake.set
        self._thread = threading.Thread(target=self._run,
                                        name='zookeeper-frontend',
                                        daemon=True)
        self._thread.start()
        LOG.info('ZooKeeper front end started on %s as %s',
                 connection.hosts(self.settings),
                 ', '.join(sorted(self.registry.ids.values())))

    def stop(self):
        """Stop; the session's locks and components go with it."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
        self._workers.shutdown()
        for cache in self._caches.values():
            cache.close()
        if self.client is not None:
            self.client.stop()
            self.client.close()
        self.store.engine.dispose()

    def _cache_event(self, loaded, event):
        if event.event_type == kazoo_cache.TreeEvent.INITIALIZED:
            loaded.set()
        self._wake.set()

    def _session_state(self, state):
        if state == kazoo_states.KazooState.LOST:
            self._session_lost = True
        self._wake.set()

    def _run(self):
        while not self._stopping.is_set():
            self._wake.wait(self.conf.interval)
            if self._stopping.is_set() or not self.client.connected:
                continue
            self._wake.clear()
            began = time.monotonic()
            try:
                self.run_pass()
            except Exception:
                LOG.exception('ZooKeeper front end pass failed')
            # A pass reads every request and node: the changes that come
            # meanwhile (a burst of them) wait for one next pass.
            self._stopping.wait(max(MIN_GAP, PASS_SHARE * (
                time.monotonic() - began)))

    # The pass

    def run_pass(self):
        if self._session_lost:
            self._recover_session()
        if self.ctx.layout is not self.registry.layout:
            # The launcher reloaded it.
            self.registry.follow(self.ctx.layout)
        requests = self._requests()
        linked = {row['zk_request']: row for row in self.store.zk_requests()}
        cached = dict(requests)
        marked = self._marked_nodes() if self.held else {}
        self._each(lambda request_id: self._follow(
            request_id, cached.get(request_id), linked.get(request_id),
            marked), list(self.held))
        now = time.time()
        if now - self._last_cleanup >= self.conf.cleanup_interval:
            self._last_cleanup = now
            if self._take_lost(requests, linked) and \
                    now - self._started < 3 * self.settings['timeout']:
                # Locked still by the session of this fleet's launcher
                # that died (its locks go once its session expires):
                # look again in a second.
                self._last_cleanup = now - self.conf.cleanup_interval + 1
            self._remove_stale_locks(requests)
            self._forget_requests(requests, linked)
        wanted = [request_id for request_id, data in requests
                  if request_id not in self.held
                  and data.get('state') == records.REQUESTED
                  and self._consider(request_id, data)]
        # The locks are taken at once, the requests then taken in order.
        for request_id, locked in zip(wanted, self._each(self._lock_request,
                                                         wanted)):
            if locked is not None:
                self._take(request_id, *locked, linked.get(request_id))
        self._mirror_nodes(requests)

    def _each(self, function, items):
        """``function`` of each item, several at once.

        Their ZooKeeper round trips overlap.
        """
        if len(items) < 2:
            return [function(item) for item in items]
        return list(self._workers.map(function, items))

    def _recover_session(self):
        """The session was lost with its locks: start again from ZooKeeper."""
        LOG.warning('ZooKeeper session lost: its locks are gone; '
                    'registering again')
        self._session_lost = False
        self.held.clear()
        self.node_locks.clear()
        self.registry.register()
        self._last_cleanup = 0.0

    def _requests(self):
        """(id, data) of the NodeRequests, in nodepool's order."""
        cache = self._caches[connection.REQUESTS]
        children = sorted(cache.get_children(connection.REQUESTS) or ())
        requests = []
        for request_id in children[:self.conf.max_znodes]:
            if not connection.REQUEST_ID.match(request_id):
                continue
            node = cache.get_data(self._request_path(request_id))
            if node is None or not node.data:
                continue
            try:
                data = connection.decode(node.data,
                                         self._request_path(request_id))
            except connection.BadZnode as e:
                LOG.warning('Ignoring request: %s', e)
                continue
            requests.append((request_id, data))
        requests.sort(key=lambda item: records.sort_key(*item))
        return requests

    # Requests

    @staticmethod
    def _request_path(request_id):
        return '%s/%s' % (connection.REQUESTS, request_id)

    def _consider(self, request_id, data):
        """Whether to take a ``requested`` NodeRequest.

        One that no pool of the layout serves is declined here, unless a
        registered pool of someone else's may serve it.
        """
        ours = set(self.registry.ids.values())
        if ours <= records.declined(data):
            return False
        problem = records.request_problem(data,
                                          self.ctx.conf.requests.max_nodes)
        labels = data.get('node_types') if problem is None else []
        serving = list(self.ctx.layout.pools_serving(labels)) \
            if problem is None else []
        if not serving:
            if problem is None and self._others_serve(data):
                return False
            self._locked_request(request_id, self._decline,
                                 problem or 'no pool serves all of %s'
                                 % ', '.join(labels))
            return False
        return not self._yields_to_provider(data)

    def _lock_request(self, request_id):
        """(lock, data) of a request still ``requested``, locked; or None."""
        lock = connection.try_lock(self.client, '%s/%s' % (
            connection.REQUEST_LOCKS, request_id))
        if lock is None:
            return None
        try:
            data, _ = connection.read(self.client,
                                      self._request_path(request_id))
        except Exception:
            connection.release(lock)
            raise
        if data is None or data.get('state') != records.REQUESTED or \
                set(self.registry.ids.values()) <= records.declined(data):
            connection.release(lock)
            return None
        return lock, data

    def _take(self, request_id, lock, data, row):
        """A store request for a locked NodeRequest, which goes pending."""
        try:
            row = self._store_request(request_id, data, row)
            data.update(state=records.PENDING, state_time=time.time())
            data.setdefault('declined_by', [])
            data.setdefault('nodes', [])
            data.setdefault('reuse', True)
            self.client.set(self._request_path(request_id),
                            connection.encode(data))
        except Exception:
            connection.release(lock)
            raise
        self.held[request_id] = (lock, row['id'])
        LOG.info('[request %s] Taking NodeRequest %s for %s', row['id'],
                 request_id, ', '.join(data['node_types']))
        self.launcher.wake()

    def _store_request(self, request_id, data, row):
        """The store request serving a NodeRequest: ``row``, or a new one.

        A row left by an earlier life that no longer serves the request
        (it ended, and the request was asked again) is released first.
        """
        if row is not None and row['state'] in (models.REQUESTED,
                                                models.PENDING):
            return row
        if row is not None:
            self.store.release_request(row['id'])
        precedence = int(request_id.partition('-')[0])
        requestor = data.get('requestor')
        return self.store.create_request(
            data['node_types'], priority=precedence,
            requestor=requestor if isinstance(requestor, str) else None,
            zk_request=request_id)

    def _others_serve(self, data):
        """Whether a registered pool not of this process may serve it."""
        ours = set(self.registry.ids.values())
        declined = records.declined(data)
        wanted = set(data['node_types'])
        return any(pool['id'] not in ours and pool['id'] not in declined
                   and wanted <= set(pool.get('supported_labels') or ())
                   for pool in self._pools())

    def _yields_to_provider(self, data):
        """Whether the request prefers another provider that is online."""
        provider = data.get('provider')
        if not isinstance(provider, str) or \
                provider in self.ctx.layout.providers:
            return False
        declined = records.declined(data)
        wanted = set(data['node_types'])
        return any(pool.get('provider_name') == provider
                   and pool['id'] not in declined
                   and wanted <= set(pool.get('supported_labels') or ())
                   for pool in self._pools())

    def _pools(self):
        return self.registry.pools(self.conf.max_znodes)

    def _locked_request(self, request_id, action, *args):
        """Run ``action(request_id, data, *args)`` under the request's lock.

        The request is read again once locked; a request that is no longer
        ``requested`` is left alone.
        """
        lock = connection.try_lock(self.client, '%s/%s' % (
            connection.REQUEST_LOCKS, request_id))
        if lock is None:
            return
        try:
            data, _ = connection.read(self.client,
                                      self._request_path(request_id))
            if data is not None and data.get('state') == records.REQUESTED:
                action(request_id, data, *args)
        finally:
            connection.release(lock)

    def _decline(self, request_id, data, reason):
        """Decline for every pool of this process, as nodepool's pools do.

        The request fails once every registered pool declined it, else it
        is ``requested`` again for the others.
        """
        declined = data.get('declined_by')
        if not isinstance(declined, list):
            declined = []
        declined = list(declined) + sorted(
            set(self.registry.ids.values()) - set(declined))
        registered = {pool['id'] for pool in self._pools()}
        state = (records.FAILED if registered <= set(declined)
                 else records.REQUESTED)
        data.update(declined_by=declined, state=state,
                    state_time=time.time(), nodes=[])
        self.client.set(self._request_path(request_id),
                        connection.encode(data))
        LOG.info('NodeRequest %s declined (%s): %s', request_id, reason,
                 state)

    def _follow(self, request_id, data, row, marked):
        """Mirror the store's outcome of a request this process holds.

        ``data`` is the request as cached (None: not seen there), ``row``
        its store request, ``marked`` :meth:`_marked_nodes`.
        """
        lock, row_id = self.held[request_id]
        if data is None or (row is not None and row['state'] in (
                models.FULFILLED, models.REQUEST_FAILED)):
            data, _ = connection.read(self.client,
                                      self._request_path(request_id))
        if data is None:
            # Zuul took the request back.
            LOG.info('[request %s] NodeRequest %s was deleted; releasing '
                     'it', row_id, request_id)
            self._release_row(row_id)
            self._end(request_id)
        elif row is None or row['id'] != row_id:
            self._decline(request_id, data, 'its store request is gone')
            self._end(request_id)
        elif row['state'] == models.FULFILLED:
            self._fulfil(request_id, data, row, marked)
        elif row['state'] == models.REQUEST_FAILED:
            self._decline(request_id, data, row['reason'])
            self._release_row(row_id)
            self._end(request_id)

    def _release_row(self, row_id):
        try:
            self.store.release_request(row_id)
        except exceptions.FleetflowError:
            pass

    def _end(self, request_id):
        lock, _ = self.held.pop(request_id)
        connection.release(lock)

    def _fulfil(self, request_id, data, row, marked):
        """Write a Node znode for each node, then fulfil the request.

        A node that has one already (``marked``: made before a crash, not
        yet linked) keeps it.
        """
        nodes = self.store.list_nodes(request_id=row['id'])
        by_label = {}
        for node in nodes:
            by_label.setdefault(node['label'], []).append(node)
        try:
            ordered = [by_label[label].pop(0)
                       for label in data['node_types']]
        except (KeyError, IndexError, TypeError):
            self._decline(request_id, data, 'its nodes are not its labels')
            self._release_row(row['id'])
            self._end(request_id)
            return
        now = time.time()
        ids = []
        for node in ordered:
            node_id = node['zk_node'] or marked.get(node['id'])
            if node_id is None:
                node_id = self._create_node(node, request_id, data, now)
            elif node['zk_node'] is None:
                self.store.update_node(node['id'], zk_node=node_id)
            ids.append(node_id)
        data.update(state=records.FULFILLED, state_time=time.time(),
                    nodes=ids)
        self.client.set(self._request_path(request_id),
                        connection.encode(data))
        LOG.info('[request %s] NodeRequest %s fulfilled with nodes %s',
                 row['id'], request_id, ', '.join(ids))
        self._end(request_id)

    def _create_node(self, node, request_id, request, now):
        provider = self.ctx.provider(node['provider'])
        pool = provider.pool(node['pool'])
        label = provider.label(node['pool'], node['label'])
        quota = provider.quota_for_label(node['pool'], node['label'])
        resources = {key: value for key, value in quota.to_dict().items()
                     if value is not None}
        launcher_id = self.registry.ids[(node['provider'], node['pool'])]
        data = records.node_data(node, request_id, request, launcher_id,
                                 provider.entry, pool, label, resources, now)
        path = self.client.create(connection.NODES + '/',
                                  connection.encode(data), sequence=True)
        node_id = path.rsplit('/', 1)[1]
        try:
            self.store.update_node(node['id'], zk_node=node_id)
        except Exception:
            # Unlinked, it would be made again: take it back.
            self.client.delete(path)
            raise
        return node_id

    def _marked_nodes(self):
        """Store node id -> id of the Node znode that names it."""
        return {fleetflow_id: node_id
                for node_id, data in self._nodes()
                for fleetflow_id in [records.fleetflow_node(data)]
                if fleetflow_id}

    def _take_lost(self, requests, linked):
        """Take the ``pending`` requests whose launcher's lock is gone.

        :returns: whether a pending request of this fleet's is locked by
            someone else.
        """
        locked = False
        for request_id, data in requests:
            if data.get('state') != records.PENDING or \
                    request_id in self.held:
                continue
            lock = connection.try_lock(self.client, '%s/%s' % (
                connection.REQUEST_LOCKS, request_id))
            if lock is None:
                locked = locked or request_id in linked
                continue
            data, _ = connection.read(self.client,
                                      self._request_path(request_id))
            row = linked.get(request_id)
            if data is None or data.get('state') != records.PENDING:
                connection.release(lock)
            elif row is not None and row['state'] in (
                    models.REQUESTED, models.PENDING, models.FULFILLED,
                    models.REQUEST_FAILED):
                LOG.info('[request %s] Taking up NodeRequest %s again',
                         row['id'], request_id)
                self.held[request_id] = (lock, row['id'])
            else:
                self._reset_lost(request_id, data)
                connection.release(lock)
        return locked

    def _reset_lost(self, request_id, data):
        """A request its launcher left ``pending``: ``requested`` again.

        Its nodes that nobody holds are no longer allocated to it (ours are
        then deleted, as any ready node whose request is gone).
        """
        for node_id, node in self._nodes():
            if node.get('allocated_to') != request_id:
                continue
            lock = self._lock_node(node_id)
            if lock is None:
                continue
            node, _ = connection.read(self.client, self._node_path(node_id))
            if node is not None and node.get('allocated_to') == request_id:
                node['allocated_to'] = None
                if node.get('state') == records.INIT:
                    node['state'] = records.DELETING
                self.client.set(self._node_path(node_id),
                                connection.encode(node))
            self._unlock_node(node_id)
        data.update(state=records.REQUESTED, state_time=time.time(),
                    nodes=[])
        self.client.set(self._request_path(request_id),
                        connection.encode(data))
        LOG.info('NodeRequest %s left pending by a launcher that is gone: '
                 'requested again', request_id)

    def _remove_stale_locks(self, requests):
        existing = {request_id for request_id, _ in requests}
        now = time.time()
        try:
            locks = self.client.get_children(connection.REQUEST_LOCKS)
        except kze.NoNodeError:
            return
        for lock_id in locks[:self.conf.max_znodes]:
            if lock_id in existing or lock_id in self.held:
                continue
            path = '%s/%s' % (connection.REQUEST_LOCKS, lock_id)
            stat = self.client.exists(path)
            if stat is not None and \
                    now - stat.mtime / 1000.0 > self.conf.stale_lock_age:
                LOG.info('Removing the lock of request %s, which is gone',
                         lock_id)
                try:
                    self.client.delete(path, recursive=True)
                except kze.NoNodeError:
                    pass

    def _forget_requests(self, requests, linked):
        """Store requests of NodeRequests that are gone, not held here.

        A fulfilled one goes once its nodes are gone; one that did not
        end is released (Zuul took it back), and so is one fulfilled in
        the store only: a node without its Node znode was never handed
        to Zuul (its launcher died before the NodeRequest was fulfilled,
        which comes after every Node znode is written and linked).
        """
        existing = {request_id for request_id, _ in requests}
        for request_id, row in linked.items():
            if request_id in existing or request_id in self.held or \
                    self.client.exists(self._request_path(request_id)):
                continue
            nodes = self.store.list_nodes(request_id=row['id'])
            if row['state'] != models.FULFILLED or any(
                    node['zk_node'] is None for node in nodes):
                LOG.info('[request %s] NodeRequest %s is gone: releasing '
                         'its nodes', row['id'], request_id)
                self._release_row(row['id'])
            elif not nodes:
                self.store.delete_request(row['id'])

    # Nodes

    @staticmethod
    def _node_path(node_id):
        return '%s/%s' % (connection.NODES, node_id)

    def _nodes(self):
        """(id, data) of the Node znodes (anyone's)."""
        cache = self._caches[connection.NODES]
        nodes = []
        for node_id in sorted(cache.get_children(connection.NODES) or ())[
                :self.conf.max_znodes]:
            node = cache.get_data(self._node_path(node_id))
            if node is None or not node.data:
                continue
            try:
                nodes.append((node_id, connection.decode(
                    node.data, self._node_path(node_id))))
            except connection.BadZnode as e:
                LOG.warning('Ignoring node: %s', e)
        return nodes

    def _locked_by_others(self, node_id):
        if node_id in self.node_locks:
            return False
        cache = self._caches[connection.NODES]
        return bool(cache.get_children(self._node_path(node_id) + '/lock'))

    def _lock_node(self, node_id):
        lock = self.node_locks.get(node_id)
        if lock is None:
            lock = connection.try_lock(self.client,
                                       self._node_path(node_id) + '/lock')
            if lock is not None:
                self.node_locks[node_id] = lock
        return lock

    def _unlock_node(self, node_id):
        lock = self.node_locks.pop(node_id, None)
        if lock is not None:
            connection.release(lock)

    def _mirror_nodes(self, requests):
        existing = {request_id for request_id, _ in requests}
        rows = {row['id']: row for row in self.store.list_nodes()}
        methods = {REMOVE: self._remove_node, LINK: self._link_node,
                   RETIRE: self._retire, HOLD: self._hold}
        work = []
        nodes = self._nodes()
        for node_id, data in nodes:
            fleetflow_id = records.fleetflow_node(data)
            if fleetflow_id is None or self._locked_by_others(node_id):
                continue
            row = rows.get(fleetflow_id)
            action = node_action(node_id, data, row, existing,
                                 node_id in self.node_locks)
            if action == REMOVE and row is not None:
                LOG.warning('Node %s names node %s, which is node %s: '
                            'removing it', node_id, row['id'],
                            row['zk_node'])
            if action is not None:
                work.append((methods[action], node_id, data, row))
        named = {node_id for node_id, _ in nodes}
        work.extend((self._orphaned, row['zk_node'], None, row)
                    for row in rows.values()
                    if row['state'] == node_states.IN_USE
                    and row['zk_node'] is not None
                    and row['zk_node'] not in named)
        self._each(self._act_on_node, work)

    def _act_on_node(self, item):
        method, node_id, data, row = item
        try:
            method(node_id, data, row)
        except (kze.KazooException, exceptions.FleetflowError) as e:
            LOG.warning('Node %s: %s; trying again at the next pass',
                        node_id, e)

    def _link_node(self, node_id, data, row):
        self.store.update_node(row['id'], zk_node=node_id)

    def _retire(self, node_id, data, row):
        """Lock the Node, mark it ``deleting``, its node ``used``.

        The lock is kept until the node is deleted and its znode removed.
        """
        if self._lock_node(node_id) is None:
            return
        data, _ = connection.read(self.client, self._node_path(node_id))
        if data is None or not self._retiring(data, row):
            self._unlock_node(node_id)
            return
        if data.get('state') != records.DELETING:
            LOG.info('[node %s] Node %s is %s: deleting it', row['id'],
                     node_id, data.get('state'))
            data.update(state=records.DELETING, state_time=time.time())
            self.client.set(self._node_path(node_id), connection.encode(data))
        if row['state'] not in node_states.DOOMED:
            try:
                self.store.set_node_state(
                    row['id'], node_states.USED,
                    expected=node_states.RETIRABLE,
                    hold_expires=None)
            except exceptions.NodeStateConflict:
                return
            self.launcher.wake()

    def _orphaned(self, node_id, data, row):
        """An in-use node whose Node znode is gone: nobody can hold it.

        It is ``used`` in the store (deleted), unless its znode is only
        not cached yet.
        """
        if connection.read(self.client, self._node_path(node_id))[0] \
                is not None:
            return
        try:
            self.store.set_node_state(row['id'], node_states.USED,
                                      expected=[node_states.IN_USE])
        except exceptions.NodeStateConflict:
            return
        LOG.info('[node %s] Node %s is gone: deleting the node', row['id'],
                 node_id)
        self.launcher.wake()

    def _retiring(self, data, row):
        """Whether a Node, read again under its lock, is to be deleted."""
        state = data.get('state')
        if state == records.READY:
            request = data.get('allocated_to')
            return row['state'] in node_states.DOOMED or not (
                isinstance(request, str)
                and connection.REQUEST_ID.match(request)
                and self.client.exists(self._request_path(request)))
        if state == records.HOLD:
            return row['state'] in node_states.DOOMED
        return state in (records.USED, records.IN_USE, records.DELETING) \
            or row['state'] in node_states.DOOMED

    def _hold(self, node_id, data, row):
        """Zuul held the node: hold it in the store, until it expires."""
        data, _ = connection.read(self.client, self._node_path(node_id))
        if data is None or data.get('state') != records.HOLD:
            return
        expires = records.hold_expires(
            data, getattr(self.ctx.layout, 'max_hold_age', None))
        comment = data.get('comment')
        try:
            self.store.set_node_state(
                row['id'], node_states.HOLD,
                expected=[node_states.IN_USE, node_states.READY],
                hold_reason=comment if isinstance(comment, str) else None,
                hold_expires=expires)
        except exceptions.NodeStateConflict:
            return
        LOG.info('[node %s] Node %s held by Zuul (%s), until %s', row['id'],
                 node_id, comment, 'released' if expires is None
                 else time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(
                     expires)))

    def _remove_node(self, node_id, data, row):
        """Remove a Node znode whose node is gone, as nodepool does.

        Locked, it is marked ``deleted`` (from ``data``, as cached: nobody
        else changes it under the lock), then removed with its lock.
        """
        if self._lock_node(node_id) is None:
            return
        data = dict(data, state=records.DELETED, state_time=time.time())
        try:
            self.client.set(self._node_path(node_id), connection.encode(data))
            self.client.delete(self._node_path(node_id), recursive=True)
        except kze.NoNodeError:
            pass
        self.node_locks.pop(node_id, None)
        LOG.info('Node %s removed: its node is deleted', node_id)
