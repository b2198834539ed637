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
        self.layout = layout
        #: (provider name, pool name) -> this start's launcher id, of every
        #: pool the layout had since the start
        self.ids = {}
        #: (provider name, pool name) -> its component's path
        self.paths = {}

    def register(self):
        """Create the components (again, after a lost session)."""
        self._create('launcher', dict(self._base(), kind='launcher'))
        self.paths.clear()
        self.follow(self.layout)

    def follow(self, layout):
        """Register the pools of ``layout``, and only those.

        A pool kept keeps its launcher id; its component is updated.
        """
        self.layout = layout
        wanted = {}
        for provider, pool in layout.pools():
            key = (provider['name'], pool['name'])
            self.ids.setdefault(key, pool_id(self.host, *key))
            wanted[key] = dict(
                self._base(), kind='pool', id=self.ids[key],
                name=pool['name'], provider_name=provider['name'],
                supported_labels=sorted(label['name']
                                        for label in pool['labels']),
                priority=pool.get('priority', 100), paused=False)
        for key in set(self.paths) - set(wanted):
            try:
                self.client.delete(self.paths.pop(key))
            except kze.NoNodeError:
                pass
        for key, content in wanted.items():
            if key in self.paths:
                self.client.set(self.paths[key], connection.encode(content))
            else:
                self.paths[key] = self._create('pool', content)

    def _base(self):
        return dict(hostname=self.hostname, state='running',
                    version=version(), model_api=MODEL_API)

    def _create(self, kind, content):
        return self.client.create(
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
