"""The delete flow of a node."""

from taskflow.patterns import linear_flow

from fleetflow import flows
from fleetflow import retries
from fleetflow.tasks import instances
from fleetflow.tasks import nodes


def get_delete_flow(node_id, provider, delete_timeout):
    """Delete one node: deleting, delete instance, wait gone, remove row.

    A delete that fails leaves the node deleting; the launcher runs this
    flow for it again later. The flow depends only on the timeout, and is
    shared by the nodes that have the same one.
    """
    return _delete_flow(delete_timeout)


@flows.shared
def _delete_flow(delete_timeout):
    flow = linear_flow.Flow('delete')
    flow.add(nodes.MarkNodeDeleting(name='mark-deleting',
                                    provides='external_id'))
    flow.add(instances.DeleteInstance(name='delete-instance',
                                      provides='deleted'))
    flow.add(retries.polled('wait-gone', delete_timeout,
                            instances.WaitForInstanceGone,
                            'wait-instance-gone'))
    flow.add(nodes.RemoveNode(name='remove-node'))
    return flow
