"""[persistence] options."""

from oslo_config import cfg

persistence_group = cfg.OptGroup('persistence', title='Flow persistence',
                                 help='Where flow progress is recorded.')

persistence_opts = [
    cfg.StrOpt('backend', default='sql',
               choices=[('sql', 'the database of [database] connection; '
                                'flows resume after a restart'),
                        ('memory', 'in memory only; flows are lost when the '
                                   'process stops (tests and benchmarks)')],
               help='Backend of the flow logbooks.'),
]


def register_opts(conf):
    conf.register_group(persistence_group)
    conf.register_opts(persistence_opts, group=persistence_group)


def list_opts():
    return {persistence_group: persistence_opts}
