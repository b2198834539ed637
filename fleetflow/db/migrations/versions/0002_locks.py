"""Locks that launchers on several hosts take in turn.

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'


def upgrade():
    locks = op.create_table(
        'fleetflow_locks',
        sa.Column('name', sa.String(64), primary_key=True),
    )
    op.bulk_insert(locks, [{'name': 'launcher-pass'}])
