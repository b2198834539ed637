"""[keyscan] options."""

from oslo_config import cfg

keyscan_group = cfg.OptGroup('keyscan', title='SSH keyscan',
                             help='How nodes are proven reachable.')

keyscan_opts = [
    cfg.IntOpt('workers', default=16, min=1, max=1024,
               help='SSH scans run at once by this process.'),
    cfg.FloatOpt('connect_timeout', default=5.0, min=0.1, max=300,
                 help='Seconds one connection attempt of a scan may take, '
                      'banner and key exchange included.'),
]


def register_opts(conf):
    conf.register_group(keyscan_group)
    conf.register_opts(keyscan_opts, group=keyscan_group)


def list_opts():
    return {keyscan_group: keyscan_opts}
