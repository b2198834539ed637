"""[database] options."""

from oslo_config import cfg

database_group = cfg.OptGroup('database', title='Database options',
                              help='The SQL database holding the node store '
                                   'and the flow logbooks.')

database_opts = [
    cfg.StrOpt('connection',
               secret=True,
               sample_default='sqlite:///$state_path/fleetflow.sqlite',
               help='SQLAlchemy URL of the database. Defaults to a SQLite '
                    'file under state_path; use PostgreSQL (or MySQL) when '
                    'several launcher hosts share one fleet.'),
    cfg.IntOpt('pool_size', default=10, min=1, max=1000,
               help='Connections kept open to a server database.'),
    cfg.IntOpt('busy_timeout', default=30, min=1, max=3600,
               help='Seconds a SQLite writer waits for the lock.'),
]


def register_opts(conf):
    conf.register_group(database_group)
    conf.register_opts(database_opts, group=database_group)


def list_opts():
    return {database_group: database_opts}
