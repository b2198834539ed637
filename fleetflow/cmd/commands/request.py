"""``fleetflow request ...``: create, list, show and release requests."""

from fleetflow import client as ff_client
from fleetflow.cmd.commands import base
from fleetflow.db import models

#: The fields of ``request show``, in order.
SHOW_FIELDS = ('id', 'state', 'labels', 'nodes', 'reason', 'created_at',
               'priority', 'requestor', 'provider', 'pool', 'launcher',
               'state_time')
#: The columns of ``request list``.
LIST_COLUMNS = ('id', 'state', 'priority', 'labels', 'nodes', 'requestor',
                'reason', 'created_at')


def request_value(request, field):
    value = request.get(field)
    if field in ('created_at', 'state_time'):
        return base.iso(value)
    if field in ('labels', 'nodes'):
        return base.ListColumn(value)
    return value


def show_request(request):
    return SHOW_FIELDS, tuple(request_value(request, f)
                              for f in SHOW_FIELDS)


class RequestCreate(base.ShowOne):
    """Ask for one node of each label given.

    Lower priority numbers are served first. With --wait, shows the
    request once it is fulfilled (with its nodes) and exits 1 when it
    failed (with the reason) or the timeout passed.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('labels', metavar='LABEL', nargs='+',
                            help='A label; repeat it for several nodes.')
        parser.add_argument('--priority', type=int, default=100,
                            help='Lower numbers are served first '
                                 '(default 100).')
        parser.add_argument('--requestor', default='fleetflow-cli',
                            help='Who asks (default fleetflow-cli).')
        parser.add_argument('--wait', action='store_true',
                            help='Wait until it is fulfilled or failed.')
        parser.add_argument('--timeout', type=float, default=600,
                            metavar='SECONDS',
                            help='Longest wait with --wait (default 600).')
        return parser

    def take_action(self, parsed_args):
        client = self.app.client
        request = client.create_request(parsed_args.labels,
                                        priority=parsed_args.priority,
                                        requestor=parsed_args.requestor)
        if parsed_args.wait:
            try:
                request = client.wait_for_request(request['id'],
                                                  parsed_args.timeout)
            except ff_client.WaitTimeout as e:
                request = e.last
                self.fail_after_output(
                    '%s; it stays queued: release it with "request '
                    'release %s"' % (e, request['id']))
            else:
                if request['state'] == models.REQUEST_FAILED:
                    self.fail_after_output('request %s failed: %s'
                                           % (request['id'],
                                              request['reason']))
        return show_request(request)


class RequestList(base.Lister):
    """List requests in the order they are served."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('--state', action='append',
                            choices=models.REQUEST_STATES,
                            help='Only requests in this state (may be '
                                 'repeated).')
        return parser

    def take_action(self, parsed_args):
        requests = self.app.client.list_requests(states=parsed_args.state)
        return LIST_COLUMNS, [tuple(request_value(request, f)
                                    for f in LIST_COLUMNS)
                              for request in requests]


class RequestShow(base.ShowOne):
    """Show a request and its nodes."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('request_id', metavar='REQUEST_ID')
        return parser

    def take_action(self, parsed_args):
        return show_request(
            self.app.client.get_request(parsed_args.request_id))


class RequestRelease(base.Command):
    """Hand a request's nodes back (they are deleted) and forget it."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('request_id', metavar='REQUEST_ID')
        return parser

    def take_action(self, parsed_args):
        client = self.app.client
        nodes = client.get_request(parsed_args.request_id)['nodes']
        client.release_request(parsed_args.request_id)
        self.write('request %s released%s' % (
            parsed_args.request_id,
            '; nodes handed back: %s' % ', '.join(nodes) if nodes else ''))
