"""Tasks that change node rows in the node store."""

from taskflow.types import failure as tf_failure

from fleetflow import node_states
from fleetflow import retries
from fleetflow.tasks import base

ADDRESS_FIELDS = ('external_id', 'interface_ip', 'public_ipv4',
                  'private_ipv4', 'public_ipv6', 'az', 'region',
                  'connection_port', 'connection_type', 'username')


class MarkNodeBuilding(base.FleetflowTask):
    """The node is building, launched by this host.

    Revert: the node is failed, or aborted when the cloud refused it for
    quota or capacity, with the failure that reverted the launch.
    """

    def execute(self, node_id):
        self.ctx.store.set_node_state(
            node_id, node_states.BUILDING, expected=[node_states.BUILDING],
            launcher=self.ctx.conf.host)

    def revert(self, node_id, result, flow_failures, **kwargs):
        if isinstance(result, tf_failure.Failure):
            return
        failures = list(flow_failures.values())
        aborted = any(f.check(*retries.ABORTING) for f in failures)
        state = node_states.ABORTED if aborted else node_states.FAILED
        reason = '; '.join(f.exception_str for f in failures)
        self.log(node_id).warning('Launch %s: %s', state, reason)
        self.ctx.store.set_node_state(node_id, state,
                                      expected=[node_states.BUILDING],
                                      failure=reason)


class UpdateNodeFromInstance(base.FleetflowTask):
    """Copy the instance's addresses, ids, az and region onto the node.

    Revert: clear them again, while the node is building (a node that
    another run of its launch readied is not this run's to undo).
    """

    def execute(self, node_id, instance):
        values = {field: instance[field] for field in ADDRESS_FIELDS
                  if instance.get(field) is not None}
        self.ctx.store.update_node(node_id, **values)

    def revert(self, node_id, result, **kwargs):
        if isinstance(result, tf_failure.Failure):
            return
        cleared = {field: None for field in ADDRESS_FIELDS
                   if field not in ('connection_port', 'connection_type')}
        self.ctx.store.update_node(node_id, expected=[node_states.BUILDING],
                                   **cleared)


class SaveHostKeys(base.FleetflowTask):
    """Record the scanned SSH host keys on the node.

    Revert: forget them, while the node is building.
    """

    def execute(self, node_id, host_keys):
        self.ctx.store.update_node(node_id, host_keys=host_keys)

    def revert(self, node_id, result, **kwargs):
        if not isinstance(result, tf_failure.Failure):
            self.ctx.store.update_node(
                node_id, expected=[node_states.BUILDING], host_keys=[])


class MarkNodeReady(base.FleetflowTask):
    """The node is ready. Nothing follows it, so it has nothing to undo.

    Run again after a crash, it finds the node ready, or already handed
    on from ready (in use, used, held, deleting): that is done.
    """

    def execute(self, node_id):
        node = self.ctx.store.get_node(node_id)
        if node['state'] in node_states.PAST_READY:
            return
        self.ctx.store.set_node_state(node_id, node_states.READY,
                                      expected=[node_states.BUILDING])
        self.log(node_id, node).info('Node ready: %s', node['external_id'])


class MarkNodeDeleting(base.FleetflowTask):
    """The node is being deleted.

    Nothing to revert: a delete that fails leaves the node deleting, and
    the launcher deletes it again later.
    """

    def execute(self, node_id):
        node = self.ctx.store.find_node(node_id)
        if node is None:
            return None
        self.ctx.store.set_node_state(node_id, node_states.DELETING,
                                      expected=node_states.DELETE_FLOW)
        return node['external_id']


class RemoveNode(base.FleetflowTask):
    """Remove the node row: its instance is gone."""

    def execute(self, node_id):
        self.log(node_id, {}).info('Node deleted')
        self.ctx.store.delete_node(node_id)
