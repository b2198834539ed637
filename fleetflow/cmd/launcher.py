"""fleetflow-launcher: the long-running launcher service."""

import gc
import logging
import signal
import sys
import threading

from oslo_log import log
import sqlalchemy.exc

from fleetflow.cmd import common
from fleetflow.cmd import manage
from fleetflow import context
from fleetflow.db import migration
from fleetflow import exceptions
from fleetflow.execution import processes
from fleetflow.execution import service
from fleetflow import status

LOG = log.getLogger(__name__)
PROG = 'fleetflow-launcher'


def check_database(ctx):
    """Exit 1 with one line unless the database's schema is current."""
    # alembic logs two lines of its own each time it looks.
    logging.getLogger('alembic.runtime.migration').setLevel(logging.WARNING)
    try:
        current = migration.current_revision(ctx.engine)
    except sqlalchemy.exc.SQLAlchemyError as e:
        common.fail(PROG, common.database_error(ctx.conf, e))
    problem = common.schema_problem(ctx.conf, current,
                                    manage.head_revision())
    if problem:
        common.fail(PROG, problem)


def start_frontend(ctx, launcher):
    """The ZooKeeper front end, when the layout names ZooKeeper, or None.

    :raises ConfigError: when kazoo (the ``zookeeper`` extra) is missing.
    """
    if not getattr(ctx.layout, 'zookeeper', None):
        return None
    try:
        from fleetflow.zk import frontend
    except ImportError as e:
        raise exceptions.ConfigError(
            'the layout names zookeeper-servers, which needs the zookeeper '
            'extra: pip install \'fleetflow[zookeeper]\' (%s)' % e)
    return frontend.start_for(ctx, launcher)


def main(argv=None):
    """Run until SIGTERM; a bad config or layout exits 1 naming the key."""
    conf = common.load_config(argv, PROG)
    ctx = common.make_context(conf, prog=PROG)
    check_database(ctx)
    try:
        # The launcher; with [jobboard] enabled, a launcher and/or a
        # conductor per [launcher] role.
        launcher = service.make_service(ctx)
    except exceptions.ConfigError as e:
        common.fail(PROG, e)
    context.set_current(ctx)
    # What was loaded so far lives as long as the process: the collector
    # need not look at it again.
    gc.freeze()
    gc.set_threshold(*processes.GC_THRESHOLD)
    stopping = threading.Event()
    if hasattr(launcher, 'on_lost'):
        # Another launcher took the database: exit 1.
        launcher.on_lost = stopping.set
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    # SIGHUP reloads the layout (as a change of its file does)
    signal.signal(signal.SIGHUP, lambda *_: launcher.request_reload())
    try:
        launcher.start()
    except sqlalchemy.exc.SQLAlchemyError as e:
        common.fail(PROG, common.database_error(conf, e))
    except exceptions.FleetflowError as e:
        common.fail(PROG, e)
    try:
        frontend = start_frontend(ctx, launcher)
    except exceptions.ConfigError as e:
        launcher.stop()
        common.fail(PROG, e)
    server = None
    if conf.status_api.enabled:
        server = status.StatusServer.from_conf(launcher)
        server.start()
    stopping.wait()
    LOG.info('Stopping: no new flows; running flows stop at a task '
             'boundary and resume at the next start')
    if server is not None:
        server.stop()
    if frontend is not None:
        frontend.stop()
    launcher.stop()
    return 1 if getattr(launcher, 'lost', False) else 0


if __name__ == '__main__':
    sys.exit(main())
