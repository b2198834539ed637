"""``fleetflow flow show``: what a node's launch and delete flows did."""

from fleetflow.cmd.commands import base

COLUMNS = ('flow', 'atom', 'kind', 'state', 'attempts', 'duration',
           'failure')


def _seconds(value):
    return None if value is None else round(value, 3)


class FlowShow(base.Lister):
    """Show a node's flows: each flow, then each of its atoms.

    A flow's own row has kind ``flow``; its atoms are tasks and retries,
    with how often they ran (a retry: its attempts), how long they took
    (seconds, waits included) and the failure that failed or reverted
    them.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('node_id', metavar='NODE_ID')
        return parser

    def take_action(self, parsed_args):
        from fleetflow import flowinfo
        ctx = self.app.context
        flows = flowinfo.describe_flows(ctx, parsed_args.node_id)
        if not flows:
            # A node that never had a flow has no rows; an unknown one is
            # an error.
            self.app.client.get_node(parsed_args.node_id)
        rows = []
        for flow in flows:
            rows.append((flow['name'], None, 'flow', flow['state'], None,
                         _seconds(flow.get('duration')), None))
            for atom in flow['atoms']:
                rows.append((flow['name'], atom['name'], atom['kind'],
                             atom['state'], atom.get('attempts'),
                             _seconds(atom.get('duration')),
                             atom.get('failure')))
        return COLUMNS, rows
