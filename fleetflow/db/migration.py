"""Schema migrations: fleetflow's own alembic tree, then TaskFlow's tables.

fleetflow's alembic revisions keep their version in their own table
(``fleetflow_alembic_version``) so that they never collide with the
version table of TaskFlow's persistence migrations.
"""

import os

from alembic import command
from alembic import config as alembic_config
from alembic import migration as alembic_migration

VERSION_TABLE = 'fleetflow_alembic_version'


def _config(connection):
    cfg = alembic_config.Config()
    cfg.set_main_option('script_location', os.path.join(
        os.path.dirname(__file__), 'migrations'))
    cfg.attributes['connection'] = connection
    return cfg


def upgrade(engine, revision='head'):
    """Create or upgrade fleetflow's tables and TaskFlow's logbook tables."""
    with engine.begin() as connection:
        command.upgrade(_config(connection), revision)
    from fleetflow import persistence
    persistence.upgrade(engine)


def current_revision(engine):
    with engine.connect() as connection:
        context = alembic_migration.MigrationContext.configure(
            connection, opts={'version_table': VERSION_TABLE})
        return context.get_current_revision()
