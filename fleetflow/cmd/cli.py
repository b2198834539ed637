"""``fleetflow``: the admin command line.

Built with cliff: ``fleetflow --config-file F COMMAND ...``. Listing
commands take cliff's ``-f table|json|yaml|csv|value``, show commands
``-f table|json|yaml|shell|value``, and both ``-c COLUMN``. More commands
can be added through the ``fleetflow.cli`` entry point namespace.
"""

import sys

from fleetflow.cmd.commands import cloud
from fleetflow.cmd.commands import config
from fleetflow.cmd.commands import flow
from fleetflow.cmd.commands import node
from fleetflow.cmd.commands import request
from fleetflow.cmd import common
from fleetflow.cmd import jobs

NAMESPACE = 'fleetflow.cli'

COMMANDS = {
    'node list': node.NodeList,
    'node show': node.NodeShow,
    'node delete': node.NodeDelete,
    'node hold': node.NodeHold,
    'node release': node.NodeRelease,
    'request create': request.RequestCreate,
    'request list': request.RequestList,
    'request show': request.RequestShow,
    'request release': request.RequestRelease,
    'flow show': flow.FlowShow,
    'instance list': cloud.InstanceList,
    'label list': cloud.LabelList,
    'provider list': cloud.ProviderList,
    'config validate': config.ConfigValidate,
    'job list': jobs.JobList,
}


class FleetflowApp(common.App):
    def __init__(self, **streams):
        super().__init__(
            'fleetflow',
            'Administer a fleetflow fleet: nodes, requests, flows, '
            'providers and their instances.',
            NAMESPACE, COMMANDS, **streams)


def main(argv=None):
    return FleetflowApp().run(sys.argv[1:] if argv is None else argv)


if __name__ == '__main__':
    sys.exit(main())
