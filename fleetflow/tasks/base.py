"""What fleetflow's tasks share."""

import logging

from taskflow import task

from fleetflow import context
from fleetflow import logutils


class FleetflowTask(task.Task):
    """A task that finds the store and providers in the current context."""

    @property
    def ctx(self):
        return context.current()

    def log(self, node_id, node=None):
        """A logger that names the node and, if it has one, its request.

        ``node`` is the node's row when the caller has read it already;
        otherwise the store is asked.
        """
        if node is None:
            node = self.ctx.store.find_node(node_id) or {}
        return logutils.node_logger(logging.getLogger(self.__module__),
                                    node_id, node.get('request_id'))
