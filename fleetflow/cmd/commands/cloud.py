"""``fleetflow instance|label|provider list``: the fleet against the clouds.
"""

import collections

from fleetflow.cmd.commands import base
from fleetflow.drivers import base as driver_base
from fleetflow import exceptions
from fleetflow import node_states
from fleetflow import quota


def owns(node, instance):
    """Whether ``node`` (a row, or None) owns ``instance``.

    As the launcher's leak cleanup reckons it: the node the instance is
    tagged with exists and has no other instance (or is still building).
    """
    return node is not None and (
        node['external_id'] in (None, instance.external_id)
        or node['state'] == node_states.BUILDING)


class InstanceList(base.Lister):
    """List the instances a provider's cloud has, as the cloud reports them.

    ``node_id`` is the node the instance is tagged with; ``known`` says
    whether fleetflow has that node and it owns the instance.
    ``leaked`` marks instances tagged as this provider's that no node
    owns: the launcher deletes them.
    """

    COLUMNS = ('provider', 'external_id', 'node_id', 'state', 'known',
               'node_state', 'leaked')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('--provider', metavar='NAME',
                            help='Only this provider (default: all).')
        return parser

    def take_action(self, parsed_args):
        ctx = self.app.context
        if parsed_args.provider is None:
            names = list(ctx.providers)
        elif parsed_args.provider in ctx.providers:
            names = [parsed_args.provider]
        else:
            raise exceptions.FleetflowError(
                'unknown provider %r (the layout has: %s)'
                % (parsed_args.provider,
                   ', '.join(ctx.providers) or 'none'))
        nodes = {node['id']: node for node in ctx.store.list_nodes()}
        rows = []
        for name in names:
            driver = ctx.provider(name).driver
            try:
                instances = driver.list_instances()
            except driver_base.DriverError as e:
                raise exceptions.FleetflowError(
                    'provider %s: listing instances failed: %s' % (name, e))
            for instance in instances:
                node = nodes.get(instance.node_id)
                known = owns(node, instance)
                leaked = (not known and instance.state != driver_base.DELETING
                          and driver.owned_metadata(instance.metadata))
                rows.append((name, instance.external_id, instance.node_id,
                             instance.state, known,
                             node['state'] if node else None, leaked))
        return self.COLUMNS, rows


class LabelList(base.Lister):
    """List labels with min-ready and how many nodes are in each state."""

    COLUMNS = ('name', 'min-ready', 'ready', 'building', 'in-use', 'hold',
               'total')

    def take_action(self, parsed_args):
        labels = self.app.layout.labels
        counts = collections.defaultdict(collections.Counter)
        for _provider, _pool, label, state, count in \
                self.app.client.store.count_nodes():
            counts[label][state] += count
        rows = []
        for name in list(labels) + sorted(set(counts) - set(labels)):
            states = counts[name]
            rows.append((name, labels.get(name, {}).get('min-ready', 0),
                         states[node_states.READY],
                         states[node_states.BUILDING],
                         states[node_states.IN_USE], states[node_states.HOLD],
                         sum(states.values())))
        return self.COLUMNS, rows


class ProviderList(base.Lister):
    """List providers with their driver, pools and quota.

    ``limits`` is what applies to the provider's nodes in all: the least
    of the cloud's limits and of its pools' ``max-servers``, ``max-cores``
    and ``max-ram`` added up (``-``: unlimited); ``used`` is what
    fleetflow's nodes take of it, by the quota each node's label needs.
    """

    COLUMNS = ('name', 'driver', 'pools', 'nodes', 'limits', 'used')

    def take_action(self, parsed_args):
        ctx = self.app.context
        usage = quota.Usage(ctx)
        rows = []
        for name, provider in ctx.providers.items():
            try:
                limits = quota.provider_limits(provider).to_dict()
            except driver_base.DriverError as e:
                limits = {'error': str(e)}
            used = usage.provider_used.get(name) or \
                driver_base.Quota.zero()
            rows.append((name, provider.entry['driver'],
                         base.ListColumn([pool['name'] for pool in
                                          provider.entry['pools']]),
                         usage.count(provider=name),
                         base.DictColumn(limits),
                         base.DictColumn(used.to_dict())))
        return self.COLUMNS, rows
