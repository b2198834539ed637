"""The launch flow of a node."""

from taskflow.patterns import linear_flow

from fleetflow import flows
from fleetflow import retries
from fleetflow.tasks import instances
from fleetflow.tasks import keyscan
from fleetflow.tasks import nodes


def get_launch_flow(node_id, provider, pool, label, launch_retries,
                    launch_timeout, boot_timeout, host_key_checking):
    """Launch one node: building, create, active, addresses, keys, ready.

    Each attempt first waits until the last attempt's instance is gone.

    All inputs are plain values, so any process can rebuild the flow from
    its logbook. The same values are the flow's store; the flow itself
    depends only on the retries, timeouts and host key checking, and is
    shared by the nodes that have the same ones.
    """
    return _launch_flow(launch_retries, launch_timeout, boot_timeout,
                        host_key_checking)


@flows.shared
def _launch_flow(launch_retries, launch_timeout, boot_timeout,
                 host_key_checking):
    attempt = linear_flow.Flow(
        'launch-attempt',
        retry=retries.LaunchAttempts(launch_retries,
                                     name='launch-attempts'))
    # A reverted attempt asked for its instance's delete: the next one
    # waits, parked, until it is gone before it creates another.
    attempt.add(retries.polled(
        'wait-last-gone', launch_timeout, instances.WaitForLastInstanceGone,
        'wait-last-instance-gone', poll_timeout=launch_timeout))
    attempt.add(instances.CreateInstance(name='create-instance',
                                         provides='created'))
    attempt.add(retries.polled(
        'wait-active', launch_timeout, instances.WaitForInstanceActive,
        'wait-instance-active', provides='instance',
        rebind={'instance': 'created'}))
    attempt.add(nodes.UpdateNodeFromInstance(name='update-node'))
    if host_key_checking:
        attempt.add(retries.polled(
            'keyscan', boot_timeout, keyscan.ScanHostKeys, 'scan-host-keys',
            provides='host_keys'))
        attempt.add(nodes.SaveHostKeys(name='save-host-keys'))

    flow = linear_flow.Flow('launch')
    flow.add(nodes.MarkNodeBuilding(name='mark-building'))
    flow.add(attempt)
    flow.add(nodes.MarkNodeReady(name='mark-ready'))
    return flow
