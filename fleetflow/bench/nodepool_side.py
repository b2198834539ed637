"""The same workload on nodepool 11.0.0, for a side-by-side benchmark.

``run(args)`` (in fleetflow's environment) starts nodepool's launcher from
its own virtualenv (``tools/nodepool-venv``) with nodepool's ``fake``
driver (an instance is active 0.1 s after its create; its quota raised to
twice the load, see :func:`launcher`), keyscan off, on a
ZooKeeper of its own (the Debian ``zookeeper`` package's, on a free
loopback port; or ``--zookeeper-hosts``, under a chroot of its own); then
runs this file as a
script with the virtualenv's Python: the requester, which submits N
one-node requests at once through nodepool's ZooKeeper client, returns
every node (locked, set ``used``, as Zuul does) once all are fulfilled,
and waits until they are deleted. The launcher's CPU, peak RSS and threads
are read from /proc, as for fleetflow.

As a script it imports only the standard library and nodepool.
"""

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

IMAGE = 'fake-image'
LABEL = 'small'


def _config(tmp, hosts, tls, nodes, chroot, webapp_port):
    """nodepool.yaml and clouds.yaml in ``tmp``; their paths."""
    servers = []
    for host in hosts.split(','):
        name, _, port = host.partition(':')
        servers.append({'host': name, 'port': int(port or 2181),
                        'chroot': chroot})
    config = {
        'webapp': {'port': webapp_port, 'listen_address': '127.0.0.1'},
        'zookeeper-servers': servers,
        'zookeeper-tls': {'ca': tls['ca'], 'cert': tls['cert'],
                          'key': tls['key']},
        'labels': [{'name': LABEL, 'min-ready': 0}],
        'providers': [{
            'name': 'fake-1', 'driver': 'fake', 'cloud': 'fake',
            'region-name': 'fake-region',
            # fleetflow's fake cloud does not limit the call rate either
            'rate': 0.0001,
            'cloud-images': [{'name': IMAGE, 'image-id': 'fake-image-id'}],
            'pools': [{'name': 'main', 'max-servers': nodes * 2,
                       'host-key-checking': False,
                       'labels': [{'name': LABEL, 'cloud-image': IMAGE,
                                   'min-ram': 8192}]}]}],
    }
    clouds = {'clouds': {'fake': {'auth': {
        'username': 'fake', 'password': 'fake', 'project_id': 'fake',
        'auth_url': 'fake'}}}}
    paths = (os.path.join(tmp, 'nodepool.yaml'),
             os.path.join(tmp, 'clouds.yaml'))
    for path, data in zip(paths, (config, clouds)):
        with open(path, 'w') as f:
            json.dump(data, f)   # JSON is YAML
    return paths


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# ZooKeeper's TLS runs on Netty, whose codecs the jar's class path lacks
ZOOKEEPER_CLASSPATH = ('/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:'
                       '/usr/share/java/netty-codec.jar')


def _make_tls(tmp):
    """A CA, and a server and a client certificate it signed, in ``tmp``.

    nodepool talks to ZooKeeper over TLS only. Returns the paths:
    ``ca``, ``server`` (its key and certificate, ZooKeeper's PEM key
    store), ``key`` and ``cert`` (the client's).
    """
    import datetime
    import ipaddress

    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import serialization
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(name, key, issuer, issuer_key, ca=False):
        builder = x509.CertificateBuilder().subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ).issuer_name(issuer).public_key(key.public_key()).serial_number(
            x509.random_serial_number()).not_valid_before(
            now - datetime.timedelta(minutes=5)).not_valid_after(
            now + datetime.timedelta(days=1)).add_extension(
            x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName('localhost'),
                 x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]),
                critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def new_key():
        return rsa.generate_private_key(public_exponent=65537,
                                        key_size=2048)

    def pem(key=None, cert=None):
        data = b''
        if key is not None:
            data += key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption())
        if cert is not None:
            data += cert.public_bytes(serialization.Encoding.PEM)
        return data

    ca_key = new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            'fleetflow-bench-ca')])
    ca = issue('fleetflow-bench-ca', ca_key, ca_name, ca_key, ca=True)
    server_key, client_key = new_key(), new_key()
    server = issue('localhost', server_key, ca_name, ca_key)
    client = issue('fleetflow-bench', client_key, ca_name, ca_key)
    files = {'ca': pem(cert=ca), 'server': pem(server_key, server),
             'key': pem(client_key), 'cert': pem(cert=client)}
    paths = {}
    for name, data in files.items():
        paths[name] = os.path.join(tmp, '%s.pem' % name)
        with open(paths[name], 'wb') as f:
            f.write(data)
    return paths


def _start_zookeeper(tmp, tls):
    """A ZooKeeper server on a free loopback port: ``(process, hosts)``.

    Clients connect over TLS (``tls``: :func:`_make_tls`).
    """
    port = _free_port()
    data = os.path.join(tmp, 'zookeeper')
    os.mkdir(data)
    config = os.path.join(tmp, 'zoo.cfg')
    with open(config, 'w') as f:
        f.write('tickTime=2000\ndataDir=%s\nsecureClientPort=%d\n'
                'secureClientPortAddress=127.0.0.1\n'
                'admin.enableServer=false\n'
                'serverCnxnFactory=org.apache.zookeeper.server.'
                'NettyServerCnxnFactory\n'
                'ssl.keyStore.location=%s\nssl.keyStore.type=PEM\n'
                'ssl.trustStore.location=%s\nssl.trustStore.type=PEM\n'
                % (data, port, tls['server'], tls['ca']))
    log = open(os.path.join(tmp, 'zookeeper.log'), 'w')
    process = subprocess.Popen(
        ['java', '-Xmx256m', '-cp', ZOOKEEPER_CLASSPATH,
         'org.apache.zookeeper.server.ZooKeeperServerMain', config],
        stdout=log, stderr=log)
    log.close()
    deadline = time.time() + 60
    while process.poll() is None and time.time() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(('127.0.0.1', port)) == 0:
                return process, '127.0.0.1:%d' % port
        time.sleep(0.1)
    _stop(process)
    raise SystemExit('benchmark: ZooKeeper did not start (%s)'
                     % os.path.join(tmp, 'zookeeper.log'))


def _stop(process):
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run(args):
    """Run the workload on nodepool; the figures, as fleetflow's bench."""
    from kazoo import client as kazoo_client

    from fleetflow.bench import launcher as bench

    python = os.path.join(args.nodepool_venv, 'bin', 'python')
    if not os.path.exists(os.path.join(args.nodepool_venv, 'bin',
                                       'nodepool-launcher')):
        raise SystemExit('benchmark: no nodepool in %s (make it with '
                         'tools/nodepool-venv)' % args.nodepool_venv)
    tmp = tempfile.mkdtemp(prefix='fleetflow-bench-nodepool-')
    with contextlib.ExitStack() as cleanups:
        if args.keep:
            cleanups.callback(print, 'nodepool state kept in %s' % tmp,
                              file=sys.stderr)
        else:
            cleanups.callback(shutil.rmtree, tmp, ignore_errors=True)
        hosts = args.zookeeper
        if hosts is not None:
            tls = dict(zip(('cert', 'key', 'ca'), bench.zk_tls(args)))
        else:
            tls = _make_tls(tmp)
            server, hosts = _start_zookeeper(tmp, tls)
            cleanups.callback(_stop, server)
        zk = kazoo_client.KazooClient(
            hosts=hosts, use_ssl=True, ca=tls['ca'], keyfile=tls['key'],
            certfile=tls['cert'])
        zk.start(timeout=60)
        cleanups.callback(zk.close)
        cleanups.callback(zk.stop)
        chroot = '/fleetflow-bench-nodepool-%s' % uuid.uuid4().hex[:8]
        zk.ensure_path(chroot)
        cleanups.callback(zk.delete, chroot, recursive=True)
        config, clouds = _config(tmp, hosts, tls, args.nodes, chroot,
                                 _free_port())
        with open(os.path.join(tmp, 'nodepool-launcher.log'), 'w') as log:
            launcher = subprocess.Popen(
                [python, os.path.abspath(__file__), 'launcher',
                 str(args.nodes * 2), '-d', '-c', config],
                stdout=log, stderr=log,
                env=dict(os.environ, OS_CLIENT_CONFIG_FILE=clouds))
        cleanups.callback(_stop, launcher)
        requester = subprocess.Popen(
            [python, os.path.abspath(__file__), json.dumps({
                'hosts': '%s%s' % (hosts, chroot), 'tls': tls,
                'nodes': args.nodes, 'timeout': args.timeout})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        cleanups.callback(_stop, requester)
        if requester.stdout.readline().strip() != 'ready':
            raise SystemExit('benchmark: the nodepool requester failed')
        start = bench.proc_stats(launcher.pid)
        peak_threads = start['threads']
        requester.stdin.write('go\n')
        requester.stdin.flush()
        while requester.poll() is None:
            peak_threads = max(peak_threads,
                               bench.proc_stats(launcher.pid)['threads'])
            time.sleep(0.02)
        end = bench.proc_stats(launcher.pid)
        result = json.loads(requester.stdout.read())
    return dict(result, **{
        'system': 'nodepool 11.0.0',
        'launcher_cpu_s': round(end['cpu'] - start['cpu'], 3),
        'peak_rss_mb': round(end['peak_rss_mb'], 1),
        'peak_threads': peak_threads,
    })


# The requester, run with nodepool's Python


def _wait(predicate, timeout, what):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise SystemExit('nodepool requester: timed out waiting for %s'
                             % what)
        time.sleep(0.02)


def request_and_return(params):
    """Submit, wait, return the nodes, wait; print the figures as JSON."""
    from nodepool.zk import zookeeper as zk_model
    from nodepool.zk import ZooKeeperClient

    tls = params['tls']
    client = ZooKeeperClient(params['hosts'], timeout=30,
                             tls_cert=tls['cert'], tls_key=tls['key'],
                             tls_ca=tls['ca'])
    client.connect()
    zk = zk_model.ZooKeeper(client, enable_cache=False)
    kazoo = client.client
    _wait(lambda: kazoo.exists('/nodepool/components/launcher')
          and kazoo.get_children('/nodepool/components/launcher'), 120,
          'the launcher to start')
    print('ready', flush=True)
    sys.stdin.readline()

    submitted = time.time()
    requests = []
    for _ in range(params['nodes']):
        request = zk_model.NodeRequest()
        request.state = zk_model.REQUESTED
        request.node_types = [LABEL]
        request.requestor = 'fleetflow-bench'
        request.reuse = False
        request.created_time = time.time()
        zk.storeNodeRequest(request)
        requests.append(request)
    created = {request.id: request.created_time for request in requests}
    done = {}

    def settled():
        for request in requests:
            if request.id in done:
                continue
            current = zk.getNodeRequest(request.id)
            if current.state in (zk_model.FULFILLED, zk_model.FAILED):
                done[request.id] = current
        return len(done) == len(requests)

    _wait(settled, params['timeout'], 'requests to be fulfilled')
    all_fulfilled = time.time() - submitted
    fulfilled = [r for r in done.values() if r.state == zk_model.FULFILLED]
    latencies = sorted(r.state_time - created[r.id] for r in fulfilled)

    released = time.time()
    node_ids = []
    for request in done.values():
        for node_id in request.nodes:
            node = zk.getNode(node_id)
            zk.lockNode(node, blocking=True, timeout=60)
            node.state = zk_model.USED
            zk.storeNode(node)
            zk.unlockNode(node)
            node_ids.append(node_id)
        zk.deleteNodeRequest(request)
    _wait(lambda: not any(zk.getNode(i) for i in node_ids),
          params['timeout'], 'released nodes to be deleted')
    deleted = time.time() - released
    client.disconnect()
    print(json.dumps({
        'nodes': params['nodes'],
        'fulfilled': len(fulfilled),
        'failed': params['nodes'] - len(fulfilled),
        'median_fulfilled_s': round(statistics.median(latencies), 3)
        if latencies else None,
        'p95_fulfilled_s': round(latencies[int(0.95 * (len(latencies) - 1))],
                                 3) if latencies else None,
        'all_fulfilled_s': round(all_fulfilled, 3),
        'all_deleted_s': round(deleted, 3),
        'launches_per_s': round(len(fulfilled) / all_fulfilled, 1),
    }))


def launcher(instances, argv):
    """Run nodepool's launcher, its fake cloud's quota raised.

    The fake cloud holds 20 instances at most (a fixed quota); here it
    holds ``instances``, as fleetflow's fake cloud has room for the
    whole load.
    """
    from nodepool.cmd import launcher as launcher_cmd
    from nodepool.driver.fake import adapter

    adapter.FakeOpenStackCloud._get_quota = staticmethod(
        lambda: (4 * instances, instances, 8192 * instances))
    sys.argv = ['nodepool-launcher'] + argv
    sys.exit(launcher_cmd.main())


if __name__ == '__main__':
    if sys.argv[1] == 'launcher':
        launcher(int(sys.argv[2]), sys.argv[3:])
    request_and_return(json.loads(sys.argv[1]))
