"""[DEFAULT] options."""

import os
import socket

from oslo_config import cfg

default_opts = [
    cfg.StrOpt('state_path',
               default=os.path.abspath('state'),
               sample_default='$pwd/state',
               help='Directory where fleetflow keeps its state: the SQLite '
                    'database by default, and the state of local instances.'),
    cfg.HostnameOpt('host',
                    default=socket.gethostname(),
                    sample_default='<hostname>',
                    help='Name of this launcher host, used to tell launchers '
                         'apart in logs, stats and job ownership.'),
]


def register_opts(conf):
    conf.register_opts(default_opts)


def list_opts():
    return {'DEFAULT': default_opts}
