"""fleetflow-launcher: the long-running launcher service."""

import signal
import sys
import threading

from oslo_config import cfg
from oslo_log import log

from fleetflow import conf as ff_conf
from fleetflow import context
from fleetflow import exceptions
from fleetflow import jobboard
from fleetflow import status

LOG = log.getLogger(__name__)


def main(argv=None):
    conf = cfg.ConfigOpts()
    try:
        ff_conf.setup(conf, sys.argv[1:] if argv is None else argv,
                      project='fleetflow')
        log.setup(conf, 'fleetflow')
        ctx = context.Context(conf)
        # The launcher; with [jobboard] enabled, a launcher and/or a
        # conductor per [launcher] role.
        launcher = jobboard.make_service(ctx)
    except (cfg.Error, exceptions.ConfigError) as e:
        print('fleetflow-launcher: configuration error: %s' % e,
              file=sys.stderr)
        return 1
    context.set_current(ctx)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    launcher.start()
    server = None
    if conf.status_api.enabled:
        server = status.StatusServer(launcher, conf.status_api.bind_host,
                                     conf.status_api.bind_port)
        server.start()
    stopping.wait()
    LOG.info('Stopping: no new flows; running flows stop at a task '
             'boundary and resume at the next start')
    if server is not None:
        server.stop()
    launcher.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
