"""``fleetflow job list``: the flows waiting or running on the jobboard."""

import datetime

from fleetflow.cmd.commands import base
from fleetflow import exceptions

COLUMNS = ('uuid', 'name', 'node_id', 'state', 'owner', 'created_on',
           'flow_uuid')


def _iso(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return base.iso(value.timestamp())
    return value


class JobList(base.Lister):
    """List the jobs on the fleet's jobboard, oldest first.

    A job is one launch or delete flow of one node: ``UNCLAIMED`` until a
    conductor claims it, then ``CLAIMED`` with the conductor that runs it
    as its owner (the host's name and a token of its process). A job
    leaves the board when its flow is done. Needs ``[jobboard] enabled``.
    """

    def take_action(self, parsed_args):
        from fleetflow.execution import board as ff_board
        conf = self.app.conf
        if not conf.jobboard.enabled:
            raise exceptions.FleetflowError(
                'the jobboard is not enabled ([jobboard] enabled = false): '
                'launchers run their flows in process')
        board = ff_board.Board(conf)
        board.connect()
        try:
            rows = board.describe()
        finally:
            board.close()
        return COLUMNS, [
            (row['uuid'], row['name'], row['node_id'], row['state'],
             row['owner'], _iso(row['created_on']), row['flow_uuid'])
            for row in rows]
