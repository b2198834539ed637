"""fleetflow's oslo.config options, one module per group."""

from oslo_config import cfg
from oslo_log import log

from fleetflow.conf import api
from fleetflow.conf import database
from fleetflow.conf import default
from fleetflow.conf import jobboard
from fleetflow.conf import keyscan
from fleetflow.conf import launcher
from fleetflow.conf import persistence
from fleetflow.conf import stats
from fleetflow.conf import zookeeper

MODULES = (default, database, launcher, persistence, keyscan, stats, api,
           jobboard, zookeeper)

CONF = cfg.CONF


def register_opts(conf):
    for module in MODULES:
        module.register_opts(conf)


def database_url(conf):
    """The database URL, defaulting to a SQLite file under state_path."""
    if conf.database.connection:
        return conf.database.connection
    return 'sqlite:///%s/fleetflow.sqlite' % conf.state_path


def setup(conf, argv=None, project='fleetflow', default_config_files=None):
    """Register options and logging, then parse argv into ``conf``."""
    register_opts(conf)
    try:
        log.register_options(conf)
    except cfg.ArgsAlreadyParsedError:
        pass
    conf(argv if argv is not None else [], project=project,
         default_config_files=default_config_files)


register_opts(CONF)
