"""Log lines about a node name the node and, where there is one, its
request."""

import logging


class NodeLogger(logging.LoggerAdapter):
    """Prefixes every message with ``[node N request R]``."""

    def process(self, msg, kwargs):
        node = self.extra.get('node_id')
        request = self.extra.get('request_id')
        prefix = '[node %s' % node
        if request:
            prefix += ' request %s' % request
        return '%s] %s' % (prefix, msg), kwargs


def node_logger(logger, node_id, request_id=None):
    return NodeLogger(logger, {'node_id': node_id, 'request_id': request_id})
