"""What NodeRequest and Node znodes hold, checked and built.

A znode is data from outside: a NodeRequest is checked before anything in
it is used, and a Node of fleetflow's is recognised by the fleetflow node
id it carries in ``driver_data`` (looked up in the store, nothing more).
"""

import re

# nodepool's states
REQUESTED = 'requested'
PENDING = 'pending'
FULFILLED = 'fulfilled'
FAILED = 'failed'

INIT = 'init'
READY = 'ready'
IN_USE = 'in-use'
USED = 'used'
HOLD = 'hold'
DELETING = 'deleting'
DELETED = 'deleted'

#: where a Node of fleetflow's names its node in the store
MARKER = 'fleetflow-node'
_NODE_ID = re.compile(r'^[0-9a-f-]{36}$')
#: the most launcher ids a request's declined_by may list
MAX_DECLINED = 10000


def request_problem(data, max_nodes):
    """Why a NodeRequest's data cannot be served, or None."""
    labels = data.get('node_types')
    if not isinstance(labels, list) or not labels:
        return 'node_types must be a non-empty list of labels'
    if len(labels) > max_nodes:
        return ('a request may ask for at most %d nodes, not %d'
                % (max_nodes, len(labels)))
    if not all(isinstance(label, str) and label for label in labels):
        return 'node_types must hold label names'
    declined = data.get('declined_by', [])
    if not isinstance(declined, list) or len(declined) > MAX_DECLINED:
        return 'declined_by must be a list of at most %d launcher ids' % (
            MAX_DECLINED)
    return None


def declined(data):
    """The launcher ids that declined a request (a set of strings)."""
    value = data.get('declined_by')
    if not isinstance(value, list):
        return set()
    return {item for item in value if isinstance(item, str)}


def sort_key(request_id, data):
    """nodepool's order: precedence, relative priority, then sequence."""
    precedence, _, sequence = request_id.partition('-')
    relative = data.get('relative_priority', 0)
    if isinstance(relative, bool) or not isinstance(relative, (int, float)):
        relative = 0
    return precedence, relative, sequence


def fleetflow_node(data):
    """The store id a Node of fleetflow's names, or None."""
    driver_data = data.get('driver_data')
    if not isinstance(driver_data, dict):
        return None
    node_id = driver_data.get(MARKER)
    if isinstance(node_id, str) and _NODE_ID.match(node_id):
        return node_id
    return None


def number(value, default=0):
    """A number from a znode's field, or ``default``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            return int(value)
        except (TypeError, ValueError):
            return default
    return value


def hold_expires(data, max_hold_age):
    """When a held Node's hold ends (a ``time.time()``), or None: never.

    Zuul's ``hold_expiration`` counts from the hold's ``state_time``;
    the layout's ``max-hold-age`` bounds it, as in nodepool.
    """
    limits = [limit for limit in (number(data.get('hold_expiration')),
                                  max_hold_age) if limit and limit > 0]
    if not limits:
        return None
    return number(data.get('state_time')) + min(limits)


def node_data(node, request_id, request, launcher_id, provider, pool,
              label, resources, now):
    """The Node znode of a ready store ``node`` given to ``request_id``.

    Every field of nodepool 11's Node, those Zuul reads filled from the
    node, its pool and its pool label; ``request`` is the NodeRequest's
    data (for its requestor and tenant).
    """
    return {
        'state': READY,
        'state_time': now,
        'type': [node['label']],
        'provider': node['provider'],
        'pool': node['pool'],
        'cloud': provider.get('cloud'),
        'region': node['region'],
        'az': node['az'],
        'launcher': launcher_id,
        'allocated_to': request_id,
        'created_time': node['created_at'],
        'external_id': node['external_id'],
        'hostname': node['external_id'],
        'interface_ip': node['interface_ip'],
        'public_ipv4': node['public_ipv4'],
        'private_ipv4': node['private_ipv4'],
        'public_ipv6': node['public_ipv6'],
        'host_id': None,
        'connection_type': node['connection_type'],
        'connection_port': node['connection_port'],
        'ssh_port': node['connection_port'],
        'username': node['username'] or label.get('username') or 'zuul',
        'host_keys': list(node['host_keys'] or []),
        'python_path': label.get('python-path') or 'auto',
        'shell_type': label.get('shell-type'),
        'attributes': pool.get('node-attributes'),
        'resources': resources,
        'slot': None,
        'image_id': None,
        'driver_data': {MARKER: node['id']},
        'tenant_name': request.get('tenant_name'),
        'requestor': request.get('requestor'),
        'comment': None,
        'user_data': None,
        'hold_job': None,
        'hold_expiration': None,
        'node_properties': {},
    }
