"""The ZooKeeper connection and the JSON znodes of nodepool's protocol."""

import json
import logging
import re

from kazoo import client as kazoo_client
from kazoo import exceptions as kze
from kazoo.handlers import threading as kazoo_handlers
from kazoo.recipe import lock as kazoo_lock

from fleetflow import exceptions

LOG = logging.getLogger(__name__)

REQUESTS = '/nodepool/requests'
REQUEST_LOCKS = '/nodepool/requests-lock'
NODES = '/nodepool/nodes'
COMPONENTS = '/nodepool/components'

#: a NodeRequest's id: its precedence, then its sequence number
REQUEST_ID = re.compile(r'^(\d{3})-(\d{10})$')
#: a Node's id: a sequence number
NODE_ID = re.compile(r'^\d{10}$')


class BadZnode(exceptions.FleetflowError):
    """A znode whose data is not what the protocol says it holds."""


def hosts(settings):
    """kazoo's host string for the layout's ``zookeeper-servers``.

    :raises ConfigError: when the servers name different chroots (one
        connection has one chroot).
    """
    chroots = {server.get('chroot') or '' for server in settings['servers']}
    if len(chroots) > 1:
        raise exceptions.ConfigError(
            'zookeeper-servers: every server must have the same chroot, '
            'not %s' % ', '.join(sorted(repr(c) for c in chroots)))
    addresses = []
    for server in settings['servers']:
        host = server['host']
        if ':' in host and not host.startswith('['):
            host = '[%s]' % host
        addresses.append('%s:%s' % (host, server.get('port') or 2281))
    return ','.join(addresses) + chroots.pop()


def connect(settings):
    """A started kazoo client for the layout's ZooKeeper settings.

    With ``zookeeper-tls``, the connection is TLS and the server's
    certificate is checked against the CA given (and the client presents
    its own certificate).
    """
    kwargs = dict(hosts=hosts(settings), timeout=settings['timeout'])
    tls = settings.get('tls')
    if tls:
        for key in ('ca', 'cert', 'key'):
            try:
                with open(tls[key], 'rb'):
                    pass
            except OSError as e:
                raise exceptions.ConfigError(
                    'zookeeper-tls: cannot read %s file %s: %s'
                    % (key, tls[key], e.strerror))
        kwargs.update(use_ssl=True, verify_certs=True, ca=tls['ca'],
                      certfile=tls['cert'], keyfile=tls['key'])
    else:
        LOG.warning('ZooKeeper without TLS: nodepool and Zuul require '
                    'zookeeper-tls')
    client = kazoo_client.KazooClient(**kwargs)
    try:
        client.start(timeout=settings['timeout'])
    except kazoo_handlers.KazooTimeoutError:
        client.close()
        raise exceptions.ConfigError(
            'zookeeper-servers: no session with %s within %ss%s'
            % (kwargs['hosts'], settings['timeout'],
               ' (TLS: is the server certificate signed by the CA of '
               'zookeeper-tls?)' if tls else ''))
    # These make the chroot too, where it is missing.
    for path in (REQUESTS, REQUEST_LOCKS, NODES, COMPONENTS):
        client.ensure_path(path)
    return client


def decode(raw, path):
    """The JSON object a znode holds.

    :raises BadZnode: naming the znode, when it holds something else.
    """
    try:
        data = json.loads(raw.decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as e:
        raise BadZnode('%s: not JSON: %s' % (path, e))
    if not isinstance(data, dict):
        raise BadZnode('%s: a JSON object was expected, not %s'
                       % (path, type(data).__name__))
    return data


def encode(data):
    return json.dumps(data, sort_keys=True).encode('utf-8')


def read(client, path):
    """(data, stat) of a znode, or (None, None) when it is gone.

    A znode with no data counts as gone: it is what a lock recipe leaves
    when it makes the path of a lock under a znode already removed.
    """
    try:
        raw, stat = client.get(path)
    except kze.NoNodeError:
        return None, None
    if not raw:
        return None, None
    return decode(raw, path), stat


def try_lock(client, path):
    """kazoo's lock recipe on ``path``, taken without waiting; or None."""
    lock = kazoo_lock.Lock(client, path)
    try:
        if lock.acquire(blocking=False):
            return lock
    except kze.NoNodeError:
        pass
    return None


def release(lock):
    """Release a lock of :func:`try_lock`; one already gone is no error."""
    try:
        lock.release()
    except kze.KazooException as e:
        LOG.debug('Lock %s already gone: %s', lock.path, e)
