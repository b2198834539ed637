"""Nodes and node requests.

Revision ID: 0001
Revises:
"""

from alembic import op
import sqlalchemy as sa

revision = '0001'
down_revision = None


def upgrade():
    op.create_table(
        'fleetflow_nodes',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('label', sa.String(255), nullable=False),
        sa.Column('provider', sa.String(255), nullable=False),
        sa.Column('pool', sa.String(255), nullable=False),
        sa.Column('state', sa.String(16), nullable=False),
        sa.Column('external_id', sa.String(255)),
        sa.Column('interface_ip', sa.String(64)),
        sa.Column('public_ipv4', sa.String(64)),
        sa.Column('private_ipv4', sa.String(64)),
        sa.Column('public_ipv6', sa.String(64)),
        sa.Column('az', sa.String(255)),
        sa.Column('region', sa.String(255)),
        sa.Column('connection_type', sa.String(32), nullable=False),
        sa.Column('connection_port', sa.Integer, nullable=False),
        sa.Column('username', sa.String(255)),
        sa.Column('host_keys', sa.JSON, nullable=False),
        sa.Column('launch_attempts', sa.Integer, nullable=False),
        sa.Column('request_id', sa.String(36)),
        sa.Column('failure', sa.Text),
        sa.Column('hold_reason', sa.Text),
        sa.Column('hold_expires', sa.Float),
        sa.Column('flow_id', sa.String(36)),
        sa.Column('launcher', sa.String(255)),
        sa.Column('created_at', sa.Float, nullable=False),
        sa.Column('state_time', sa.Float, nullable=False),
        sa.Column('ready_at', sa.Float),
    )
    op.create_index('ix_nodes_state_label', 'fleetflow_nodes',
                    ['state', 'label'])
    op.create_index('ix_nodes_provider_pool', 'fleetflow_nodes',
                    ['provider', 'pool'])
    op.create_index('ix_nodes_request', 'fleetflow_nodes', ['request_id'])
    op.create_table(
        'fleetflow_requests',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('state', sa.String(16), nullable=False),
        sa.Column('labels', sa.JSON, nullable=False),
        sa.Column('priority', sa.Integer, nullable=False),
        sa.Column('requestor', sa.String(255)),
        sa.Column('reason', sa.Text),
        sa.Column('provider', sa.String(255)),
        sa.Column('pool', sa.String(255)),
        sa.Column('launcher', sa.String(255)),
        sa.Column('not_before', sa.Float),
        sa.Column('created_at', sa.Float, nullable=False),
        sa.Column('state_time', sa.Float, nullable=False),
    )
    op.create_index('ix_requests_state_order', 'fleetflow_requests',
                    ['state', 'priority', 'created_at'])
