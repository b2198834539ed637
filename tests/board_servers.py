"""The jobboard servers the tests run against: Redis and ZooKeeper.

``tools/test-servers`` starts them on loopback (Redis on 6379, ZooKeeper
on 2181); ``FLEETFLOW_TEST_REDIS`` and ``FLEETFLOW_TEST_ZOOKEEPER``
(``host:port``) point elsewhere. A test whose server does not answer is
skipped, and fails in CI (``CI=true``), as with PostgreSQL
(:mod:`tests.db_urls`). Each test takes a namespace of its own, removed
from the server on cleanup.
"""

import contextlib
import os
import socket
import uuid

from oslo_utils import netutils

SERVERS = {
    'redis': ('FLEETFLOW_TEST_REDIS', '127.0.0.1:6379', 6379),
    'zookeeper': ('FLEETFLOW_TEST_ZOOKEEPER', '127.0.0.1:2181', 2181),
    # ZooKeeper's TLS port, with tools/test-tls's certificates
    'zookeeper-tls': ('FLEETFLOW_TEST_ZOOKEEPER_TLS', '127.0.0.1:2281',
                      2281),
}
#: the certificates of the TLS port (tools/test-tls): ca.pem, client.pem
#: and client.key (the server's names 127.0.0.1, ::1 and localhost)
TLS_DIR = os.environ.get('FLEETFLOW_TEST_TLS',
                         '/etc/zookeeper/fleetflow-test-tls')


def address(testcase, backend):
    """``host:port`` of the backend's server; skip (fail in CI) if none."""
    variable, default, port = SERVERS[backend]
    value = os.environ.get(variable, default)
    host, port = netutils.parse_host_port(value, default_port=port)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as e:
        if os.environ.get('CI'):
            testcase.fail('%s is not available in CI at %s: %s'
                          % (backend, value, e))
        testcase.skipTest('no %s server at %s: %s' % (backend, value, e))
    return '%s:%d' % (host, port)


def namespace(testcase, backend, where):
    """A new jobboard namespace, dropped from the server on cleanup."""
    name = 'test-%s' % uuid.uuid4().hex[:12]
    testcase.addCleanup(drop_namespace, backend, where, name)
    return name


def drop_namespace(backend, where, name):
    """Remove what a jobboard namespace left on the server."""
    host, port = netutils.parse_host_port(where)
    if backend == 'redis':
        import redis
        client = redis.Redis(host=host, port=port)
        with contextlib.closing(client):
            keys = list(client.scan_iter(match=name + '*'))
            if keys:
                client.delete(*keys)
        return
    from kazoo import client as kazoo_client
    client = kazoo_client.KazooClient(hosts=where)
    client.start(timeout=10)
    try:
        client.delete('/fleetflow/%s' % name, recursive=True)
    except Exception:
        pass
    finally:
        client.stop()
        client.close()
