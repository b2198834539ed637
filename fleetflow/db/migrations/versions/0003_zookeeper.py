"""Links to ZooKeeper: a request's NodeRequest znode, a node's Node znode.

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'


def upgrade():
    with op.batch_alter_table('fleetflow_requests') as batch:
        batch.add_column(sa.Column('zk_request', sa.String(255)))
        batch.create_index('ix_requests_zk_request', ['zk_request'],
                           unique=True)
    with op.batch_alter_table('fleetflow_nodes') as batch:
        batch.add_column(sa.Column('zk_node', sa.String(255)))
