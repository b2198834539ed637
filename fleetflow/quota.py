"""Quota as nodepool reckons it.

What a pool may still launch is the least of what its own limits
(``max-servers``, ``max-cores``, ``max-ram``) leave and what the provider's
limits leave. The provider's limits come from the driver (which subtracts
what instances fleetflow does not manage use); every node fleetflow has in
the provider counts against them, with the quota its label needs (asked of
the driver once and cached).
"""

import collections

from fleetflow.drivers import base as driver_base


def pool_limits(pool):
    return driver_base.Quota(instances=pool.get('max-servers'),
                             cores=pool.get('max-cores'),
                             ram=pool.get('max-ram'))


def provider_limits(provider):
    """The limits that apply to all of a provider's nodes.

    The least of the cloud's limits and its pools' limits added up (a
    limit that some pool does not set is left to the cloud).
    """
    pools = [pool_limits(pool) for pool in provider.entry['pools']]
    added = {}
    for field in driver_base.Quota.FIELDS:
        values = [getattr(limits, field) for limits in pools]
        added[field] = (None if not values or None in values
                        else sum(values))
    return provider.quota_limits().least(driver_base.Quota(**added))


class Usage:
    """A snapshot of what every provider and pool uses, from one query."""

    def __init__(self, ctx, counts=None):
        self.ctx = ctx
        self.pool_used = collections.defaultdict(driver_base.Quota.zero)
        self.provider_used = collections.defaultdict(driver_base.Quota.zero)
        self.states = collections.Counter()
        for provider, pool, label, state, count in (
                counts if counts is not None
                else ctx.store.count_nodes()):
            self.states[(provider, pool, label, state)] += count
            if provider not in ctx.providers:
                continue
            try:
                need = ctx.providers[provider].quota_for_label(pool, label)
            except KeyError:
                need = driver_base.Quota(instances=1)
            used = need.times(count)
            self.pool_used[(provider, pool)] += used
            self.provider_used[provider] += used

    def available(self, provider_name, pool_name):
        """What ``provider_name``/``pool_name`` can still launch.

        Only the pool's own limits count for a pool with
        ``ignore-provider-quota``.
        """
        provider = self.ctx.providers[provider_name]
        pool = provider.pool(pool_name)
        pool_left = pool_limits(pool) - self.pool_used[(provider_name,
                                                        pool_name)]
        if pool.get('ignore-provider-quota'):
            return pool_left
        provider_left = (provider.quota_limits()
                         - self.provider_used[provider_name])
        return pool_left.least(provider_left)

    def take(self, provider_name, pool_name, quota):
        """Count ``quota`` as used (for launches decided in this pass)."""
        self.pool_used[(provider_name, pool_name)] += quota
        self.provider_used[provider_name] += quota

    def needed(self, provider_name, pool_name, label_names):
        """The quota nodes of ``label_names`` take in the pool."""
        provider = self.ctx.providers[provider_name]
        needed = driver_base.Quota.zero()
        for label in label_names:
            needed += provider.quota_for_label(pool_name, label)
        return needed

    def fits(self, provider_name, pool_name, label_names):
        """Whether nodes of ``label_names`` fit in the pool now."""
        return self.available(provider_name, pool_name).fits(
            self.needed(provider_name, pool_name, label_names))

    def could_ever_fit(self, provider_name, pool_name, label_names):
        """Whether nodes of ``label_names`` fit in the pool's total limits.

        As if nothing else were in use: the pool's own limits and the
        provider's (nodepool's ``hasProviderQuota``).
        """
        return self.total(provider_name, pool_name).fits(
            self.needed(provider_name, pool_name, label_names))

    def total(self, provider_name, pool_name):
        """The pool's total limits: its own and its provider's."""
        provider = self.ctx.providers[provider_name]
        pool = provider.pool(pool_name)
        if pool.get('ignore-provider-quota'):
            return pool_limits(pool)
        return pool_limits(pool).least(provider.quota_limits())

    def count(self, provider=None, pool=None, label=None, state=None):
        return sum(n for (pv, pl, lb, st), n in self.states.items()
                   if (provider is None or pv == provider)
                   and (pool is None or pl == pool)
                   and (label is None or lb == label)
                   and (state is None or st == state))
