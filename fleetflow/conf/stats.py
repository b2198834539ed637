"""[stats] options."""

from oslo_config import cfg

stats_group = cfg.OptGroup('stats', title='statsd metrics',
                           help='Metrics sent to statsd; off unless '
                                'statsd_host is set.')

stats_opts = [
    cfg.HostAddressOpt('statsd_host', help='statsd host; unset turns '
                                           'stats off.'),
    cfg.PortOpt('statsd_port', default=8125, help='statsd UDP port.'),
    cfg.StrOpt('statsd_prefix', default='fleetflow',
               help='Prefix of every key sent. The keys under it are '
                    'nodepool\'s: set "nodepool" for the tree a nodepool '
                    'launcher sends, so that its dashboards work '
                    'unchanged.'),
]


def register_opts(conf):
    conf.register_group(stats_group)
    conf.register_opts(stats_opts, group=stats_group)


def list_opts():
    return {stats_group: stats_opts}
