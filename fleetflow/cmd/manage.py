"""``fleetflow-manage``: database administration.

``fleetflow-manage --config-file F db sync`` creates or upgrades
fleetflow's tables and TaskFlow's logbook tables in the configured
database; ``db version`` shows the schema revision.
"""

import os
import sys

from alembic import script as alembic_script

from fleetflow.cmd.commands import base
from fleetflow.cmd import common
from fleetflow import conf as ff_conf
from fleetflow.db import api as db_api
from fleetflow.db import migration

NAMESPACE = 'fleetflow.manage'


def _engine(conf):
    url = ff_conf.database_url(conf)
    if url.startswith('sqlite:///'):
        directory = os.path.dirname(os.path.abspath(
            url[len('sqlite:///'):]))
        os.makedirs(directory, mode=0o700, exist_ok=True)
    return db_api.create_engine(url, pool_size=1,
                                busy_timeout=conf.database.busy_timeout)


def head_revision():
    """The newest revision of fleetflow's migrations."""
    return alembic_script.ScriptDirectory(os.path.join(
        os.path.dirname(migration.__file__), 'migrations')).get_current_head()


class DbSync(base.Command):
    """Create or upgrade the database schema (fleetflow's and TaskFlow's)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('--revision', default='head',
                            help='Upgrade to this revision (default head).')
        return parser

    def take_action(self, parsed_args):
        conf = self.app.conf
        engine = _engine(conf)
        try:
            before = migration.current_revision(engine)
            migration.upgrade(engine, parsed_args.revision)
            after = migration.current_revision(engine)
        finally:
            engine.dispose()
        url = common.safe_url(ff_conf.database_url(conf))
        if before == after:
            self.write('database %s is at revision %s' % (url, after))
        else:
            self.write('database %s upgraded from revision %s to %s'
                       % (url, before or '(empty)', after))


class DbVersion(base.ShowOne):
    """Show the database's schema revision and the newest one."""

    def take_action(self, parsed_args):
        conf = self.app.conf
        engine = db_api.create_engine(ff_conf.database_url(conf),
                                      pool_size=1)
        try:
            current = migration.current_revision(engine)
        finally:
            engine.dispose()
        head = head_revision()
        return (('current', 'head', 'up_to_date'),
                (current, head, current == head))


COMMANDS = {
    'db sync': DbSync,
    'db version': DbVersion,
}


class ManageApp(common.App):
    def __init__(self, **streams):
        super().__init__('fleetflow-manage',
                         'Create and upgrade the fleetflow database.',
                         NAMESPACE, COMMANDS, **streams)


def main(argv=None):
    return ManageApp().run(sys.argv[1:] if argv is None else argv)


if __name__ == '__main__':
    sys.exit(main())
