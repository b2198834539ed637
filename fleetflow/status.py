"""A read-only JSON status endpoint over HTTP, off unless enabled.

``GET /health``, ``/nodes``, ``/requests``, ``/labels`` and ``/providers``.
It binds to loopback unless configured otherwise, and warns when it is
not. It is served by waitress: connections wait on one thread, a few
worker threads answer, and idle or slow connections are closed.
"""

import http
import ipaddress
import json
import logging
import threading
import time

import waitress.server
from waitress import wasyncore

from fleetflow import node_states
from fleetflow import quota

LOG = logging.getLogger(__name__)

#: the most a request may send after its headers (the endpoint reads none)
MAX_REQUEST_BODY = 1024


def label_counts(ctx, nodes):
    """Per label: min-ready and how many nodes are ready, building, in use."""
    rows = []
    for name, label in sorted(ctx.layout.labels.items()):
        of_label = [n for n in nodes if n['label'] == name]
        rows.append({
            'name': name, 'min_ready': label['min-ready'],
            'ready': sum(n['state'] == node_states.READY for n in of_label),
            'building': sum(n['state'] == node_states.BUILDING
                            for n in of_label),
            'in_use': sum(n['state'] == node_states.IN_USE for n in of_label)})
    return rows


def provider_quota(ctx):
    """Per provider: its driver, its quota limits and what is used."""
    usage = quota.Usage(ctx)
    rows = []
    for name, provider in sorted(ctx.providers.items()):
        rows.append({'name': name, 'driver': provider.entry['driver'],
                     'limits': quota.provider_limits(provider).to_dict(),
                     'used': usage.provider_used[name].to_dict(),
                     'nodes': usage.count(provider=name)})
    return rows


def leaked_counts(leaked):
    """``{provider: {kind: count}}`` of what leak cleanup deleted."""
    counts = {}
    for (provider, kind), count in sorted(leaked.items()):
        counts.setdefault(provider, {})[kind] = count
    return counts


def make_app(launcher):
    """The endpoint's WSGI application."""
    ctx = launcher.ctx

    def transactions():
        return ctx.store.transactions + launcher.runner.transactions

    routes = {
        '/health': lambda: {'status': 'ok', 'host': ctx.conf.host,
                            'passes': launcher.passes,
                            'cleanup_passes': launcher.cleanup_passes,
                            'leaked': leaked_counts(launcher.leaked),
                            'flows_running': launcher.runner.running(),
                            'flow_parks': launcher.runner.parks,
                            'db_transactions': transactions(),
                            'time': time.time()},
        '/nodes': lambda: ctx.store.list_nodes(),
        '/requests': lambda: ctx.store.list_requests(),
        '/labels': lambda: label_counts(ctx, ctx.store.list_nodes()),
        '/providers': lambda: provider_quota(ctx),
    }

    def app(environ, start_response):
        path = environ.get('PATH_INFO') or '/'
        route = routes.get(path.rstrip('/') or '/health')
        if environ['REQUEST_METHOD'] not in ('GET', 'HEAD'):
            code, body = 405, {'error': 'only GET'}
        elif route is None:
            code, body = 404, {'error': 'no such path: %s' % path,
                               'paths': sorted(routes)}
        else:
            code, body = 200, route()
        data = json.dumps(body, default=str).encode()
        start_response('%d %s' % (code, http.HTTPStatus(code).phrase),
                       [('Content-Type', 'application/json'),
                        ('Content-Length', str(len(data)))])
        return [data]

    return app


class StatusServer:
    """Serves the launcher's status as JSON, with waitress.

    One thread waits on every connection; ``threads`` worker threads
    answer requests. At most ``connection_limit`` connections are open at
    once (more wait to be accepted), and one that stays idle, or half a
    request, for ``timeout`` seconds is closed.
    """

    def __init__(self, launcher, host, port, threads=2, connection_limit=50,
                 timeout=10):
        self.launcher = launcher
        self.server = waitress.server.create_server(
            make_app(launcher), host=host, port=port, threads=threads,
            connection_limit=connection_limit, channel_timeout=timeout,
            cleanup_interval=max(1, timeout // 2),
            max_request_body_size=MAX_REQUEST_BODY, ident='fleetflow',
            asyncore_use_poll=True)
        self.host = self.server.effective_host
        self.port = int(self.server.effective_port)
        self._thread = threading.Thread(target=self.server.run,
                                        name='fleetflow-status',
                                        daemon=True)

    @classmethod
    def from_conf(cls, launcher):
        """A server as the ``[status_api]`` options say."""
        conf = launcher.ctx.conf.status_api
        return cls(launcher, conf.bind_host, conf.bind_port,
                   threads=conf.threads,
                   connection_limit=conf.connection_limit,
                   timeout=conf.timeout)

    def start(self):
        self._thread.start()
        LOG.info('Status endpoint on http://%s:%d/', self.host, self.port)
        if not ipaddress.ip_address(self.host).is_loopback:
            LOG.warning('The status endpoint listens on %s, beyond '
                        'loopback: anyone who reaches it reads every node\'s '
                        'address and host keys, and every request, without '
                        'authentication', self.host)

    def stop(self):
        """Close every connection and stop the workers.

        The server's own thread does it, then ends.
        """
        def close():
            self.server.task_dispatcher.shutdown()
            wasyncore.close_all(self.server._map)

        self.server.trigger.pull_trigger(close)
        self._thread.join(10)
