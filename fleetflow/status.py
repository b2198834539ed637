"""A read-only JSON status endpoint over HTTP, off unless enabled.

``GET /health``, ``/nodes``, ``/requests``, ``/labels`` and ``/providers``.
It binds to loopback unless configured otherwise.
"""

import http.server
import json
import logging
import threading
import time

from fleetflow.db import models
from fleetflow import quota

LOG = logging.getLogger(__name__)


def label_counts(ctx, nodes):
    """Per label: min-ready and how many nodes are ready, building, in use."""
    rows = []
    for name, label in sorted(ctx.layout.labels.items()):
        of_label = [n for n in nodes if n['label'] == name]
        rows.append({
            'name': name, 'min_ready': label['min-ready'],
            'ready': sum(n['state'] == models.READY for n in of_label),
            'building': sum(n['state'] == models.BUILDING
                            for n in of_label),
            'in_use': sum(n['state'] == models.IN_USE for n in of_label)})
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


class StatusServer:
    """Serves the launcher's status as JSON on a thread of its own."""

    def __init__(self, launcher, host, port):
        self.launcher = launcher
        ctx = launcher.ctx
        routes = {
            '/health': lambda: {'status': 'ok', 'host': ctx.conf.host,
                                'passes': launcher.passes,
                                'cleanup_passes': launcher.cleanup_passes,
                                'leaked': leaked_counts(launcher.leaked),
                                'flows_running': launcher.runner.running(),
                                'flow_parks': launcher.runner.parks,
                                'db_transactions': ctx.store.transactions,
                                'time': time.time()},
            '/nodes': lambda: ctx.store.list_nodes(),
            '/requests': lambda: ctx.store.list_requests(),
            '/labels': lambda: label_counts(ctx, ctx.store.list_nodes()),
            '/providers': lambda: provider_quota(ctx),
        }

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                route = routes.get(self.path.rstrip('/') or '/health')
                if route is None:
                    self._send(404, {'error': 'no such path: %s'
                                     % self.path,
                                     'paths': sorted(routes)})
                    return
                self._send(200, route())

            def _send(self, code, body):
                data = json.dumps(body, default=str).encode()
                self.send_response(code)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt, *args):
                LOG.debug('status: ' + fmt, *args)

        self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        # It looks for a stop every 0.1 s (0.5 s by default), which is as
        # long as a stop waits for it.
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        args=(0.1,), name='fleetflow-status',
                                        daemon=True)

    def start(self):
        self._thread.start()
        LOG.info('Status endpoint on http://%s:%d/',
                 *self.server.server_address[:2])

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
