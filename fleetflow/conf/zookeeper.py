"""[zookeeper] options: how the ZooKeeper front end paces itself.

Where ZooKeeper is, and its TLS files, come from the layout
(``zookeeper-servers``, ``zookeeper-tls``, ``zookeeper-timeout``), as
nodepool's do.
"""

from oslo_config import cfg

zookeeper_group = cfg.OptGroup(
    'zookeeper', title='ZooKeeper front end',
    help='How the launcher serves nodepool NodeRequests from ZooKeeper, '
         'when the layout names zookeeper-servers.')

zookeeper_opts = [
    cfg.FloatOpt('interval', default=0.5, min=0.01, max=60,
                 help='Seconds between two looks at the requests and nodes '
                      'in ZooKeeper at most; a new request is looked at at '
                      'once.'),
    cfg.FloatOpt('cleanup_interval', default=30, min=0.1, max=3600,
                 help='Seconds between two looks for pending requests '
                      'whose launcher died and for stale request locks.'),
    cfg.IntOpt('stale_lock_age', default=8 * 3600, min=0,
               help='Seconds after which the lock of a request that no '
                    'longer exists is removed (nodepool: 8 hours).'),
    cfg.IntOpt('max_znodes', default=10000, min=1,
               help='The most requests, and nodes, read in one look.'),
]


def register_opts(conf):
    conf.register_group(zookeeper_group)
    conf.register_opts(zookeeper_opts, group=zookeeper_group)


def list_opts():
    return {zookeeper_group: zookeeper_opts}
