"""``fleetflow node ...``: list, show, delete, hold and release nodes."""

from fleetflow import client as ff_client
from fleetflow.cmd.commands import base
from fleetflow import node_states

#: The fields of ``node show``, in order.
SHOW_FIELDS = ('id', 'label', 'provider', 'pool', 'state', 'external_id',
               'interface_ip', 'connection_port', 'username', 'host_keys',
               'launch_attempts', 'request_id', 'created_at', 'state_time',
               'ready_at', 'connection_type', 'public_ipv4', 'private_ipv4',
               'public_ipv6', 'az', 'region', 'launcher', 'hold_reason',
               'hold_expires', 'failure')
#: The columns of ``node list``.
LIST_COLUMNS = ('id', 'label', 'provider', 'pool', 'state', 'external_id',
                'interface_ip', 'request_id', 'state_time')
TIME_FIELDS = ('created_at', 'state_time', 'ready_at', 'hold_expires')


def node_value(node, field):
    value = node.get(field)
    if field in TIME_FIELDS:
        return base.iso(value)
    if field == 'host_keys':
        return base.LinesColumn(value)
    return value


def show_node(node):
    return SHOW_FIELDS, tuple(node_value(node, f) for f in SHOW_FIELDS)


class NodeList(base.Lister):
    """List nodes, oldest first."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('--state', action='append',
                            choices=node_states.ALL,
                            help='Only nodes in this state (may be '
                                 'repeated).')
        parser.add_argument('--provider', help='Only nodes of this '
                                               'provider.')
        parser.add_argument('--label', help='Only nodes of this label.')
        parser.add_argument('--request', metavar='REQUEST_ID',
                            help='Only nodes of this request.')
        return parser

    def take_action(self, parsed_args):
        nodes = self.app.client.list_nodes(
            states=parsed_args.state, provider=parsed_args.provider,
            label=parsed_args.label, request_id=parsed_args.request)
        return LIST_COLUMNS, [tuple(node_value(node, f)
                                    for f in LIST_COLUMNS)
                              for node in nodes]


class NodeShow(base.ShowOne):
    """Show a node, with its connection details and timestamps (UTC)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('node_id', metavar='NODE_ID')
        return parser

    def take_action(self, parsed_args):
        return show_node(self.app.client.get_node(parsed_args.node_id))


class NodeDelete(base.ShowOne):
    """Mark a node used so that the launcher deletes it.

    A held node must be released first. Shows the node's id and state:
    ``used`` (or the state it was already in on its way out), or
    ``deleted`` with --wait once its delete flow has finished.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('node_id', metavar='NODE_ID')
        parser.add_argument('--wait', action='store_true',
                            help='Wait until the node is gone.')
        parser.add_argument('--timeout', type=float, default=600,
                            metavar='SECONDS',
                            help='Longest wait with --wait (default 600).')
        return parser

    def take_action(self, parsed_args):
        client = self.app.client
        node = client.delete_node(parsed_args.node_id)
        state = node['state']
        if parsed_args.wait:
            try:
                client.wait_node_gone(node['id'], parsed_args.timeout)
                state = 'deleted'
            except ff_client.WaitTimeout as e:
                state = e.last['state'] if e.last else 'deleted'
                self.fail_after_output('%s; the launcher deletes it when '
                                       'it can' % e)
        return ('id', 'state'), (node['id'], state)


class NodeHold(base.ShowOne):
    """Hold a node: it is neither used nor deleted until released."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('node_id', metavar='NODE_ID')
        parser.add_argument('--reason', help='Why it is held.')
        parser.add_argument('--expires', type=float, metavar='SECONDS',
                            help='Release the hold after this many seconds '
                                 '(default: never).')
        return parser

    def take_action(self, parsed_args):
        return show_node(self.app.client.hold_node(
            parsed_args.node_id, reason=parsed_args.reason,
            expires_seconds=parsed_args.expires))


class NodeRelease(base.ShowOne):
    """End a node's hold; the node becomes used and is deleted."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('node_id', metavar='NODE_ID')
        return parser

    def take_action(self, parsed_args):
        return show_node(self.app.client.release_node(parsed_args.node_id))
