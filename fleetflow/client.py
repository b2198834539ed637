"""The Python API for services that embed fleetflow.

A service that needs nodes (a CI system, a test farm) talks to the node
store that the launchers serve; it does not run flows itself and needs no
layout. It registers fleetflow's options on its own oslo.config object,
points ``[database] connection`` at the fleet's database and makes a
:class:`Client`::

    from oslo_config import cfg
    import fleetflow.conf
    from fleetflow import client

    conf = cfg.ConfigOpts()
    fleetflow.conf.register_opts(conf)
    conf.set_override('connection', 'postgresql://...', 'database')

    with client.Client(conf) as fleet:
        request = fleet.create_request(['ubuntu-jammy'], priority=50,
                                       requestor='ci-gate')
        request = fleet.wait_for_request(request['id'], timeout=600)
        if request['state'] != 'fulfilled':
            raise SystemExit(request['reason'])
        for node in fleet.request_nodes(request['id']):
            run_job(node['interface_ip'], node['connection_port'],
                    node['username'], node['host_keys'])
        fleet.release_request(request['id'])

Requests and nodes are plain dicts of their columns (timestamps are
``time.time()`` seconds). A request dict also has ``nodes``: the ids of
the nodes assigned to it.

Priority: a request with a **lower** number is served first (nodepool's
convention); requests of equal priority are served oldest first. The
default is 100; priorities go from 0 to 1000000.

A request may ask for at most ``[requests] max_nodes`` nodes (50 by
default); the launcher declines, with a reason, one that no pool serving
its labels could ever hold (its ``max-servers``, ``max-cores``,
``max-ram`` and the provider's limits), as nodepool does.

Request states: ``requested`` (waiting for a launcher), ``pending`` (a
launcher is launching or assigning its nodes), ``fulfilled`` (every node is
``in-use`` by it) and ``failed`` (``reason`` says why: e.g. a label that no
pool serves, or a node whose launch failed). A request for labels that are
not in the layout is still recorded; the launcher declines it with a
reason.

Handing nodes back: :meth:`Client.release_request` makes the request's
nodes ``used`` (the launcher deletes them) and forgets the request.
"""

import time

import tenacity

from fleetflow import conf as ff_conf
from fleetflow.db import api as db_api
from fleetflow.db import models
from fleetflow import exceptions
from fleetflow import node_states

#: Request states after which nothing more happens to a request.
FINAL_REQUEST_STATES = (models.FULFILLED, models.REQUEST_FAILED)


class NotFound(exceptions.FleetflowError):
    """The node or request does not exist (or no longer)."""


class InvalidRequest(exceptions.FleetflowError, ValueError):
    """The arguments of a call are not valid."""


class WaitTimeout(exceptions.FleetflowError, TimeoutError):
    """A wait ended before the awaited change.

    :attr:`last` holds the last row seen (None when it was gone).
    """

    def __init__(self, message, last=None):
        super().__init__(message)
        self.last = last


class Client:
    """Requests and nodes of one fleet, through its database.

    :param conf: an oslo.config object on which
        :func:`fleetflow.conf.register_opts` was called; only the
        ``[database]`` options (and ``state_path`` for the SQLite default)
        and ``[requests] max_nodes`` are used.
    :param poll_interval: the longest pause, in seconds, between two looks
        at the database while waiting (the first looks come sooner).
    :param store: a :class:`fleetflow.db.api.Store` to use instead of
        making one from ``conf`` (see :meth:`from_context`).
    """

    def __init__(self, conf, poll_interval=1.0, store=None):
        self.conf = conf
        self.poll_interval = poll_interval
        self._own_engine = store is None
        if store is None:
            engine = db_api.create_engine(
                ff_conf.database_url(conf),
                pool_size=min(conf.database.pool_size, 2),
                busy_timeout=conf.database.busy_timeout)
            store = db_api.Store(engine)
        self.store = store

    @classmethod
    def from_context(cls, ctx, **kwargs):
        """A client on the store of a :class:`fleetflow.context.Context`."""
        return cls(ctx.conf, store=ctx.store, **kwargs)

    def close(self):
        """Release the database connections (if this client made them)."""
        if self._own_engine:
            self.store.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # Requests

    def create_request(self, labels, priority=100, requestor=None):
        """Ask for one node of each label in ``labels``.

        :param labels: a non-empty list of label names; a label may appear
            more than once (one node each).
        :param priority: lower numbers are served first; default 100;
            from 0 to 1000000.
        :param requestor: who asks (free text, for the operators).
        :returns: the request dict, in state ``requested``.
        :raises InvalidRequest: when ``labels`` is empty, not a list of
            names or longer than ``[requests] max_nodes``, or ``priority``
            is not an integer in its range.
        """
        if not isinstance(labels, (str, bytes)):
            labels = list(labels or ())
        problem = db_api.request_problem(labels, priority,
                                         self.conf.requests.max_nodes)
        if problem:
            raise InvalidRequest(problem)
        request = self.store.create_request(labels, priority=priority,
                                            requestor=requestor)
        return dict(request, reason=None, provider=None, pool=None,
                    launcher=None, not_before=None, nodes=[])

    def get_request(self, request_id):
        """The request dict, with ``nodes`` (ids).

        :raises NotFound: when there is no such request (never made, or
            released).
        """
        request = self._find_request(request_id)
        if request is None:
            raise NotFound('request %s not found' % request_id)
        return request

    def list_requests(self, states=None):
        """Requests (each with ``nodes``), in the order they are served."""
        nodes = {}
        for node in self.store.list_nodes():
            if node['request_id']:
                nodes.setdefault(node['request_id'], []).append(node['id'])
        return [dict(request, nodes=nodes.get(request['id'], []))
                for request in self.store.list_requests(states=states)]

    def release_request(self, request_id):
        """Hand the request's nodes back and forget the request.

        Its ``ready`` and ``in-use`` nodes become ``used`` (the launcher
        deletes them); held nodes stay held. Releasing a request that is
        still being served cancels it.

        :raises NotFound: when there is no such request.
        """
        try:
            self.store.release_request(request_id)
        except exceptions.FleetflowError as e:
            raise NotFound(str(e))

    def request_nodes(self, request_id):
        """The nodes assigned to a request, with their connection details.

        Each dict has the node's columns, among them ``interface_ip``,
        ``connection_port``, ``username``, ``connection_type`` and
        ``host_keys`` (the SSH host keys fleetflow scanned, in
        ``known_hosts`` form without the host name).

        :raises NotFound: when there is no such request.
        """
        self.get_request(request_id)
        return self.store.list_nodes(request_id=request_id)

    def wait_for_request(self, request_id, timeout=None):
        """Wait until the request is fulfilled or failed; return it.

        The request dict comes back in either case: check its ``state``
        (and ``reason`` when it failed).

        :param timeout: seconds; None waits as long as it takes.
        :raises WaitTimeout: when ``timeout`` passes first (its ``last``
            is the request as last seen).
        :raises NotFound: when the request disappears (it was released).
        """
        def look():
            request = self.get_request(request_id)
            return request['state'] in FINAL_REQUEST_STATES, request

        request = self._wait(look, timeout)
        if request['state'] not in FINAL_REQUEST_STATES:
            raise WaitTimeout('request %s is still %s after %ss'
                              % (request_id, request['state'], timeout),
                              last=request)
        return request

    # Nodes

    def list_nodes(self, states=None, provider=None, label=None,
                   request_id=None, pool=None):
        """Nodes, oldest first, filtered by every argument given.

        :param states: a list of node states (``building``, ``ready``,
            ``in-use``, ``used``, ``hold``, ``deleting``, ``failed``,
            ``aborted``).
        """
        if isinstance(states, str):
            states = [states]
        return self.store.list_nodes(states=states, provider=provider,
                                     label=label, request_id=request_id,
                                     pool=pool)

    def get_node(self, node_id):
        """The node dict.

        :raises NotFound: when there is no such node.
        """
        node = self.store.find_node(node_id)
        if node is None:
            raise NotFound('node %s not found' % node_id)
        return node

    def delete_node(self, node_id):
        """Mark a node ``used`` so that the launcher deletes it.

        A ``ready`` or ``in-use`` node becomes ``used``; a node that is
        already ``used``, ``deleting``, ``failed`` or ``aborted`` is left
        as it is (it is being deleted). Returns the node.

        :raises NodeStateConflict: when the node is held (release it
            first) or still building.
        :raises NotFound: when there is no such node.
        """
        node = self.get_node(node_id)
        if node['state'] in node_states.DOOMED:
            return node
        if node['state'] == node_states.HOLD:
            raise exceptions.NodeStateConflict(
                'node %s is held (%s); release it first'
                % (node_id, node['hold_reason'] or 'no reason given'))
        if node['state'] not in node_states.RELEASABLE:
            raise exceptions.NodeStateConflict(
                'node %s is %s; it can be deleted once it is ready or its '
                'launch failed' % (node_id, node['state']))
        self._change(node, node_states.USED, node_states.RELEASABLE)
        return self.get_node(node_id)

    def hold_node(self, node_id, reason=None, expires_seconds=None):
        """Keep a node out of use and from deletion, e.g. to debug it.

        A ``ready``, ``in-use`` or ``used`` node (not yet deleting) is
        held; holding a held node again replaces its reason and expiry.
        The launcher makes a held node ``used`` once ``expires_seconds``
        have passed (never when None). Returns the node.

        :raises NodeStateConflict: when the node is in another state.
        :raises NotFound: when there is no such node.
        """
        if expires_seconds is not None and expires_seconds <= 0:
            raise InvalidRequest('expires_seconds must be positive, not %r'
                                 % (expires_seconds,))
        node = self.get_node(node_id)
        if node['state'] not in node_states.HOLDABLE:
            raise exceptions.NodeStateConflict(
                'node %s is %s; only a node that is %s can be held'
                % (node_id, node['state'],
                   ', '.join(state for state in node_states.ALL if state
                             in node_states.HOLDABLE - {node_states.HOLD})))
        expires = (None if expires_seconds is None
                   else time.time() + expires_seconds)
        self._change(node, node_states.HOLD, node_states.HOLDABLE,
                     hold_reason=reason, hold_expires=expires)
        return self.get_node(node_id)

    def release_node(self, node_id):
        """End a hold: the node becomes ``used`` and is deleted.

        As in nodepool, a held node does not go back into service: it may
        have been changed while held. Returns the node.

        :raises NodeStateConflict: when the node is not held.
        :raises NotFound: when there is no such node.
        """
        node = self.get_node(node_id)
        if node['state'] != node_states.HOLD:
            raise exceptions.NodeStateConflict(
                'node %s is not held (it is %s)' % (node_id, node['state']))
        self._change(node, node_states.USED, [node_states.HOLD],
                     hold_expires=None)
        return self.get_node(node_id)

    def wait_node_gone(self, node_id, timeout=None):
        """Wait until the node's row is gone (its delete flow finished).

        :param timeout: seconds; None waits as long as it takes.
        :raises WaitTimeout: when ``timeout`` passes first (its ``last``
            is the node as last seen).
        """
        def look():
            node = self.store.find_node(node_id)
            return node is None, node

        node = self._wait(look, timeout)
        if node is not None:
            raise WaitTimeout('node %s is still %s after %ss'
                              % (node_id, node['state'], timeout), last=node)

    # Helpers

    def _find_request(self, request_id):
        try:
            request = self.store.get_request(request_id)
        except exceptions.FleetflowError:
            return None
        nodes = self.store.list_nodes(request_id=request_id)
        return dict(request, nodes=[node['id'] for node in nodes])

    def _change(self, node, state, expected, **fields):
        try:
            self.store.set_node_state(node['id'], state, expected=expected,
                                      **fields)
        except exceptions.NodeStateConflict:
            now = self.store.find_node(node['id'])
            if now is None:
                raise NotFound('node %s not found' % node['id'])
            raise exceptions.NodeStateConflict(
                'node %s changed to %s meanwhile; not made %s'
                % (node['id'], now['state'], state))

    def _wait(self, look, timeout):
        """Call ``look()`` -> (done, value) until done or ``timeout``.

        The pauses grow from 50ms to :attr:`poll_interval`. Returns the
        last value.
        """
        backoff = tenacity.wait_exponential(multiplier=0.05, min=0.05,
                                            max=self.poll_interval)
        if timeout is None:
            stop, wait = tenacity.stop_never, backoff
        else:
            deadline = time.monotonic() + timeout
            stop = tenacity.stop_after_delay(timeout)

            def wait(retry_state):
                # Look once more at the deadline rather than sleep past it.
                return max(0.0, min(backoff(retry_state),
                                    deadline - time.monotonic()))
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda result: not result[0]),
            wait=wait,
            stop=stop,
            retry_error_callback=lambda state: state.outcome.result(),
            reraise=True)
        return retrying(look)[1]
