"""The status endpoint, on a real socket."""

import http.client
import json
import resource
import socket
import threading
import time

from fleetflow import launcher as ff_launcher
from fleetflow import status
from tests import base


class TestStatusServer(base.TestCase):

    def setUp(self):
        super().setUp()
        ff = self.useFixture(base.FleetflowFixture(runner=False))
        self.launcher = ff_launcher.Launcher(ff.ctx)
        self.addCleanup(self.launcher.runner.stop)

    def serve(self, host='127.0.0.1', **kwargs):
        server = status.StatusServer(self.launcher, host, 0, **kwargs)
        server.start()
        self.addCleanup(server.stop)
        return server

    def get(self, server, path, method='GET'):
        conn = http.client.HTTPConnection('127.0.0.1', server.port,
                                          timeout=30)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def test_routes(self):
        server = self.serve()
        code, health = self.get(server, '/health')
        self.assertEqual((200, 'ok', 'test-host'),
                         (code, health['status'], health['host']))
        self.assertEqual([], self.get(server, '/nodes/?x=1')[1])
        code, body = self.get(server, '/no/such/path')
        self.assertEqual(404, code)
        self.assertEqual('no such path: /no/such/path', body['error'])
        self.assertEqual(405, self.get(server, '/nodes', 'POST')[0])
        self.assertNotIn('beyond loopback', self.logger.output)

    def test_idle_connections_take_no_thread(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 2048 and (hard == resource.RLIM_INFINITY or hard >= 2048):
            # both ends of every connection are in this process
            resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE,
                            (soft, hard))
        server = self.serve(threads=2, connection_limit=1000, timeout=30)
        before = threading.active_count()
        idle = []
        self.addCleanup(lambda: [sock.close() for sock in idle])
        for _ in range(500):
            idle.append(socket.create_connection(('127.0.0.1', server.port),
                                                 timeout=30))
        # every connection has reached the server (or its backlog)
        self.assertEqual(200, self.get(server, '/health')[0])
        self.assertLessEqual(threading.active_count(), before)

    def test_slow_client_cut_off(self):
        server = self.serve(timeout=1)
        sock = socket.create_connection(('127.0.0.1', server.port),
                                        timeout=30)
        self.addCleanup(sock.close)
        sock.sendall(b'GET /health HTTP/1.1\r\nHost: x\r\n')  # no end
        started = time.monotonic()
        try:
            self.assertEqual(b'', sock.recv(1024))
        except ConnectionResetError:
            pass
        # cut off by the server, not by this side's 30 s timeout
        self.assertLess(time.monotonic() - started, 30)

    def test_warning_beyond_loopback(self):
        self.serve(host='0.0.0.0')
        self.assertIn('The status endpoint listens on 0.0.0.0, beyond '
                      'loopback', self.logger.output)
