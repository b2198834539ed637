"""SQLAlchemy models of the node store."""

import sqlalchemy as sa
from sqlalchemy import orm

# Request states.
REQUESTED = 'requested'
PENDING = 'pending'
FULFILLED = 'fulfilled'
REQUEST_FAILED = 'failed'
REQUEST_STATES = (REQUESTED, PENDING, FULFILLED, REQUEST_FAILED)


class Base(orm.DeclarativeBase):
    type_annotation_map = {dict: sa.JSON, list: sa.JSON}


class Node(Base):
    __tablename__ = 'fleetflow_nodes'
    __table_args__ = (
        sa.Index('ix_nodes_state_label', 'state', 'label'),
        sa.Index('ix_nodes_provider_pool', 'provider', 'pool'),
        sa.Index('ix_nodes_request', 'request_id'),
    )

    id: orm.Mapped[str] = orm.mapped_column(sa.String(36), primary_key=True)
    label: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    provider: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    pool: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    state: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    external_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    interface_ip: orm.Mapped[str | None] = orm.mapped_column(sa.String(64))
    public_ipv4: orm.Mapped[str | None] = orm.mapped_column(sa.String(64))
    private_ipv4: orm.Mapped[str | None] = orm.mapped_column(sa.String(64))
    public_ipv6: orm.Mapped[str | None] = orm.mapped_column(sa.String(64))
    az: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    region: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    connection_type: orm.Mapped[str] = orm.mapped_column(
        sa.String(32), default='ssh')
    connection_port: orm.Mapped[int] = orm.mapped_column(default=22)
    username: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    host_keys: orm.Mapped[list] = orm.mapped_column(default=list)
    launch_attempts: orm.Mapped[int] = orm.mapped_column(default=0)
    request_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(36))
    failure: orm.Mapped[str | None] = orm.mapped_column(sa.Text)
    hold_reason: orm.Mapped[str | None] = orm.mapped_column(sa.Text)
    hold_expires: orm.Mapped[float | None] = orm.mapped_column(sa.Float)
    flow_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(36))
    launcher: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    created_at: orm.Mapped[float] = orm.mapped_column(sa.Float)
    state_time: orm.Mapped[float] = orm.mapped_column(sa.Float)
    ready_at: orm.Mapped[float | None] = orm.mapped_column(sa.Float)
    #: the id of the node's Node znode, when a ZooKeeper request has it
    zk_node: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))


class NodeRequest(Base):
    __tablename__ = 'fleetflow_requests'
    __table_args__ = (
        sa.Index('ix_requests_state_order', 'state', 'priority',
                 'created_at'),
        sa.Index('ix_requests_zk_request', 'zk_request', unique=True),
    )

    id: orm.Mapped[str] = orm.mapped_column(sa.String(36), primary_key=True)
    state: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    labels: orm.Mapped[list] = orm.mapped_column()
    priority: orm.Mapped[int] = orm.mapped_column(default=100)
    requestor: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    reason: orm.Mapped[str | None] = orm.mapped_column(sa.Text)
    provider: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    pool: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    launcher: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    not_before: orm.Mapped[float | None] = orm.mapped_column(sa.Float)
    created_at: orm.Mapped[float] = orm.mapped_column(sa.Float)
    state_time: orm.Mapped[float] = orm.mapped_column(sa.Float)
    #: the id of the NodeRequest znode this request serves (ZooKeeper)
    zk_request: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))


class Lock(Base):
    """A named lock that launchers take in turn (``fleetflow.db.locks``)."""

    __tablename__ = 'fleetflow_locks'

    name: orm.Mapped[str] = orm.mapped_column(sa.String(64),
                                              primary_key=True)
