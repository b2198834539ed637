"""What ``fleetflow-launcher`` runs: a launcher, a conductor, or both.

Without the jobboard, a launcher that runs its flows in its own process
(:class:`~fleetflow.execution.local.LocalRunner`). With ``[jobboard]
enabled``, per ``[launcher] role``: a launcher that posts its flows
(:class:`~fleetflow.execution.posting.JobboardRunner`), a conductor that
runs them (:class:`~fleetflow.execution.conductor.Conductor`), or both.
"""

import logging

from fleetflow.db import locks
from fleetflow import exceptions
from fleetflow.execution import board as ff_board
from fleetflow.execution import conductor as ff_conductor
from fleetflow.execution import posting
from fleetflow import launcher as ff_launcher

LOG = logging.getLogger(__name__)


class Service:
    """What ``fleetflow-launcher`` runs with the jobboard, per its role.

    ``launcher``: passes over requests and nodes, posting flows;
    ``conductor``: runs flows from the board; ``both``.
    """

    def __init__(self, ctx):
        self.ctx = ctx
        self.role = ctx.conf.launcher.role
        self.board = ff_board.Board(ctx.conf, ctx.persistence)
        self.launcher = None
        self.conductor = None
        if self.role in ('launcher', 'both'):
            self.launcher = ff_launcher.Launcher(ctx, posting.JobboardRunner(
                ctx, self.board, locks.PassLock(
                    ctx.engine, keepalive=ctx.conf.jobboard.claim_expiry)))
        if self.role in ('conductor', 'both'):
            self.conductor = ff_conductor.Conductor(
                ctx, self.board, on_done=self._flow_done)

    def _flow_done(self, job):
        if self.launcher is None:
            return
        node_id = ff_board.job_node(job) if job is not None else None
        if node_id and job.name.startswith('launch-'):
            # As in one process: a launch that readied its request's last
            # node fulfils it now, not at this host's next pass.
            self.launcher.fulfil_now(node_id)
        self.launcher.wake()

    # What the status endpoint reads

    @property
    def passes(self):
        return self.launcher.passes if self.launcher is not None else 0

    @property
    def cleanup_passes(self):
        return self.launcher.cleanup_passes if self.launcher is not None \
            else 0

    @property
    def leaked(self):
        return self.launcher.leaked if self.launcher is not None else {}

    @property
    def runner(self):
        return self.launcher.runner if self.launcher is not None \
            else self.conductor

    def request_reload(self):
        """Reload the layout: at the launcher's next pass, or now."""
        if self.launcher is not None:
            self.launcher.request_reload()
        else:
            ff_launcher.reload_layout(self.ctx)

    # Starting and stopping

    def start(self):
        self.board.connect()
        if self.launcher is not None:
            self.launcher.start()
        else:
            self.ctx.start()
        if self.conductor is not None:
            self.conductor.start()
        LOG.info('Host %s runs as %s on jobboard %s (%s)',
                 self.ctx.conf.host, self.role, self.board.namespace,
                 self.board.backend)

    def stop(self):
        if self.conductor is not None:
            self.conductor.stop()
        if self.launcher is not None:
            self.launcher.stop()
        else:
            self.ctx.stop()
        self.board.close()


def make_service(ctx):
    """The launcher, or with ``[jobboard] enabled`` a :class:`Service`.

    :raises ConfigError: for the conductor role without the jobboard.
    """
    if not ctx.conf.jobboard.enabled:
        if ctx.conf.launcher.role == 'conductor':
            raise exceptions.ConfigError(
                '[launcher] role = conductor needs [jobboard] enabled = '
                'true')
        return ff_launcher.Launcher(ctx)
    return Service(ctx)
