"""[status_api] and [requests] options."""

from oslo_config import cfg

status_group = cfg.OptGroup('status_api', title='Status endpoint',
                            help='A read-only JSON status endpoint over '
                                 'HTTP; off unless enabled.')

status_opts = [
    cfg.BoolOpt('enabled', default=False,
                help='Serve the status endpoint.'),
    cfg.HostAddressOpt('bind_host', default='127.0.0.1',
                       help='Address to listen on (loopback by default).'),
    cfg.PortOpt('bind_port', default=8022,
                help='Port to listen on; 0 picks a free one.'),
    cfg.IntOpt('threads', default=2, min=1, max=64,
               help='Worker threads that answer requests; connections '
                    'wait on one more thread, whatever their number.'),
    cfg.IntOpt('connection_limit', default=50, min=1, max=10000,
               help='Connections open at once; more wait to be accepted.'),
    cfg.IntOpt('timeout', default=10, min=1, max=3600,
               help='Seconds a connection may stay idle, or sending half '
                    'a request, before it is closed.'),
]


requests_group = cfg.OptGroup('requests', title='Node requests',
                              help='What a node request may ask for.')

requests_opts = [
    cfg.IntOpt('max_nodes', default=50, min=1, max=10000,
               help='Most nodes one request may ask for. The client API '
                    'refuses a larger request; the launcher declines one '
                    'written to the database some other way.'),
]


def register_opts(conf):
    conf.register_group(status_group)
    conf.register_opts(status_opts, group=status_group)
    conf.register_group(requests_group)
    conf.register_opts(requests_opts, group=requests_group)


def list_opts():
    return {status_group: status_opts, requests_group: requests_opts}
