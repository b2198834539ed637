"""Launcher and pool components, registered as nodepool's launchers do.

Each launcher process registers a ``launcher`` component, and each of its
pools a ``pool`` component whose ``id`` is the launcher id that the pool
declines requests with and that Zuul and nodepool count: a request fails
once every registered pool has declined it. Components are ephemeral: they
go with the session.
"""

import socket
import uuid

from kazoo import exceptions as kze

import fleetflow
from fleetflow.zk import connection

#: nodepool 11's model API version
MODEL_API = 0


def version():
    try:
        return fleetflow.__version__
    except AttributeError:
        return None


def pool_id(host, provider, pool):
    """A launcher id unique to this start of this pool, as nodepool's."""
    return '%s-%s-%s-%s' % (host, provider, pool, uuid.uuid4().hex)


class Registry:
    """This process's components, and the pools registered by anyone."""

    def __init__(self, client, host, layout):
        self.client = client
        self.hostname = socket.gethostname()
        self.host = host
        #: (provider name, pool name) -> this start's launcher id
        self.ids = {(provider['name'], pool['name']):
                    pool_id(host, provider['name'], pool['name'])
                    for provider, pool in layout.pools()}
        self.layout = layout

    def register(self):
        """Create the components (again, after a lost session)."""
        base = dict(hostname=self.hostname, state='running',
                    version=version(), model_api=MODEL_API)
        self._create('launcher', dict(base, kind='launcher'))
        for provider, pool in self.layout.pools():
            key = (provider['name'], pool['name'])
            self._create('pool', dict(
                base, kind='pool', id=self.ids[key], name=pool['name'],
                provider_name=provider['name'],
                supported_labels=sorted(label['name']
                                        for label in pool['labels']),
                priority=pool.get('priority', 100), paused=False))

    def _create(self, kind, content):
        self.client.create(
            '%s/%s/%s' % (connection.COMPONENTS, kind, self.hostname),
            connection.encode(content), ephemeral=True, sequence=True,
            makepath=True)

    def pools(self, limit):
        """The registered pools' contents (anyone's), at most ``limit``."""
        root = connection.COMPONENTS + '/pool'
        try:
            children = self.client.get_children(root)[:limit]
        except kze.NoNodeError:
            return []
        pools = []
        for child in children:
            try:
                data, _ = connection.read(self.client, root + '/' + child)
            except connection.BadZnode:
                continue
            if data and isinstance(data.get('id'), str):
                pools.append(data)
        return pools
