"""What flows need at run time: the store, the providers, the scanners.

Flows are rebuilt from plain inputs by any process that resumes them, so
their tasks cannot hold clients. They find them here instead: a process
that runs flows sets its :class:`Context` as the current one.
"""

import time

from fleetflow import conf as ff_conf
from fleetflow.db import api
from fleetflow import instance_cache
from fleetflow import layout as ff_layout
from fleetflow import persistence
from fleetflow import scheduler as ff_scheduler
from fleetflow import stats as ff_stats

_current = None


class Provider:
    """A provider's driver, instance cache and cached label quota."""

    def __init__(self, entry, conf, scheduler):
        self.entry = entry
        self.name = entry['name']
        self.driver = entry['driver-class'](entry, conf)
        self.cache = instance_cache.InstanceCache(
            self.driver, scheduler, conf.launcher.instance_refresh_interval,
            conf.launcher.instance_list_floor)
        self._quota_ttl = conf.launcher.quota_cache_ttl
        self._quota = {}

    def pool(self, name):
        for pool in self.entry['pools']:
            if pool['name'] == name:
                return pool
        raise KeyError('provider %s has no pool %s' % (self.name, name))

    def label(self, pool_name, label_name):
        for label in self.pool(pool_name)['labels']:
            if label['name'] == label_name:
                return label
        raise KeyError('pool %s/%s has no label %s'
                       % (self.name, pool_name, label_name))

    def _cached(self, key, compute):
        value, expires = self._quota.get(key, (None, 0))
        if time.time() >= expires:
            value = compute()
            self._quota[key] = (value, time.time() + self._quota_ttl)
        return value

    def quota_for_label(self, pool_name, label_name):
        return self._cached(('label', pool_name, label_name),
                            lambda: self.driver.get_quota_for_label(
                                self.pool(pool_name),
                                self.label(pool_name, label_name)))

    def quota_limits(self):
        return self._cached('limits', self.driver.get_quota_limits)


class Context:
    """The service's shared objects, built from its configuration."""

    def __init__(self, conf, layout=None):
        self.conf = conf
        self.layout = layout or ff_layout.load(conf.launcher.layout_file)
        self.engine = self.new_engine()
        self.store = api.Store(self.engine)
        self.persistence = persistence.get_backend(conf, self.store.db)
        self.scheduler = ff_scheduler.Scheduler()
        self.stats = ff_stats.Stats(conf)
        self.providers = {
            name: Provider(entry, conf, self.scheduler)
            for name, entry in self.layout.providers.items()}
        self._keyscanner = None
        #: providers replaced or removed by a reload, still to be stopped
        self._retired = []
        #: flows waiting for a worker of this process's runner
        self.worker_backlog = 0

    def new_engine(self):
        """An engine on the configured database, with its own connections.

        On SQLite each engine has one connection that its threads take in
        turn; a thread that must not queue behind the flows' workers (the
        launcher's pass) gets an engine of its own.
        """
        conf = self.conf
        return api.create_engine(
            ff_conf.database_url(conf), pool_size=conf.database.pool_size,
            busy_timeout=conf.database.busy_timeout)

    @property
    def keyscanner(self):
        if self._keyscanner is None:
            from fleetflow import keyscan
            self._keyscanner = keyscan.KeyScanner(
                self.conf.keyscan.workers, self.conf.keyscan.connect_timeout)
        return self._keyscanner

    def provider(self, name):
        return self.providers[name]

    def apply_layout(self, layout):
        """Use ``layout`` from now on (a reload), with started drivers.

        A provider new or changed gets a new driver; the one it replaces,
        and that of a provider removed (kept while its nodes are deleted),
        keep serving their flows until :meth:`retire_providers` stops them.

        :raises ConfigError: when a new driver does not start; nothing
            changes then.
        """
        providers = dict(self.providers)
        started = []
        try:
            for name, entry in layout.providers.items():
                if name not in providers or providers[name].entry != entry:
                    provider = Provider(entry, self.conf, self.scheduler)
                    provider.driver.start()
                    started.append(provider)
        except Exception:
            for provider in started:
                provider.driver.stop()
            raise
        for provider in started:
            if provider.name in providers:
                self._retired.append(providers[provider.name])
            providers[provider.name] = provider
        self.layout = layout
        self.providers = providers

    def retire_providers(self, with_nodes):
        """Stop the drivers replaced or removed that nothing uses now.

        :param with_nodes: names of the providers that have nodes; a
            removed one is kept until its last node is gone.
        """
        unused = set(self.providers) - set(self.layout.providers) \
            - set(with_nodes)
        if unused:
            self._retired.extend(self.providers[name] for name in unused)
            self.providers = {name: provider for name, provider
                              in self.providers.items()
                              if name not in unused}
        for provider in list(self._retired):
            if not provider.cache.waiting():
                self._retired.remove(provider)
                provider.driver.stop()

    def start(self):
        for provider in self.providers.values():
            provider.driver.start()
        self.scheduler.start()

    def stop_waits(self):
        """End the flows' waits for their instances: the process stops."""
        for provider in self.providers.values():
            provider.cache.stop_waits()

    def stop(self):
        self.scheduler.stop()
        for provider in [*self.providers.values(), *self._retired]:
            provider.driver.stop()
        if self._keyscanner is not None:
            self._keyscanner.stop()
        self.engine.dispose()


def set_current(context):
    """Make ``context`` the one that flows of this process use."""
    global _current
    _current = context


def current():
    if _current is None:
        raise RuntimeError('no fleetflow context is set: call '
                           'fleetflow.context.set_current() first')
    return _current
