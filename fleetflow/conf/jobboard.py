"""[jobboard] options."""

from oslo_config import cfg

jobboard_group = cfg.OptGroup('jobboard', title='Jobboard',
                              help='Several launcher hosts share flows '
                                   'through a TaskFlow jobboard.')

jobboard_opts = [
    cfg.BoolOpt('enabled', default=False,
                help='Post flows as jobs on a jobboard and run them in '
                     'conductors, instead of in this process only.'),
    cfg.StrOpt('backend', default='redis',
               choices=[('redis', 'Redis'), ('zookeeper', 'ZooKeeper')],
               help='Jobboard backend.'),
    cfg.ListOpt('hosts', default=['127.0.0.1'],
                help='host or host:port of the backend servers.'),
    cfg.StrOpt('username',
               help='User name for the backend. On ZooKeeper, the digest '
                    'identity that the jobboard\'s znodes are restricted '
                    'to (without it they are writable by anyone).'),
    cfg.StrOpt('password', secret=True, help='Password for the backend.'),
    cfg.BoolOpt('tls', default=False,
                help='Connect with TLS; the server\'s certificate must '
                     'name the host connected to.'),
    cfg.StrOpt('tls_ca_file',
               help='CA bundle used to verify the server (required for '
                    'ZooKeeper, which then trusts this CA only).'),
    cfg.StrOpt('tls_cert_file',
               help='Client certificate presented to the server.'),
    cfg.StrOpt('tls_key_file', help='Key of the client certificate.'),
    cfg.StrOpt('namespace', default='fleetflow',
               help='Name of the jobboard; launchers of one fleet share '
                    'it.'),
    cfg.IntOpt('claim_expiry', default=30, min=2, max=3600,
               help='Seconds after which the claims of a dead host '
                    'expire and its flows are taken over.'),
    cfg.IntOpt('conductor_workers', default=64, min=1, max=4096,
               help='Jobs one conductor runs at once.'),
]


def register_opts(conf):
    conf.register_group(jobboard_group)
    conf.register_opts(jobboard_opts, group=jobboard_group)


def list_opts():
    return {jobboard_group: jobboard_opts}
