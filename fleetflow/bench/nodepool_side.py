"""The same workload on nodepool 11.0.0, for a side-by-side benchmark.

``run(args)`` starts nodepool's launcher from its own virtualenv
(``tools/nodepool-venv``) with nodepool's ``fake`` driver (an instance is
active 0.1 s after its create; its quota raised to twice the load, see
:func:`launcher`), keyscan off, on a ZooKeeper of its own (the Debian
``zookeeper`` package's, on a free loopback port, with TLS, which nodepool
requires; or ``--zookeeper``), under a chroot of its own. Then
:mod:`fleetflow.bench.zk_requester`, run by the same virtualenv's Python,
submits N one-node requests at once through nodepool's ZooKeeper client,
returns every node once all are fulfilled, as Zuul does, and waits until
they are deleted. The launcher's CPU, peak RSS and threads are read from
/proc, as for fleetflow.

As a script (``launcher``) it imports only the standard library and
nodepool.
"""

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

IMAGE = 'fake-image'
LABEL = 'small'


def _config(tmp, hosts, tls, nodes, chroot, webapp_port):
    """nodepool.yaml and clouds.yaml in ``tmp``; their paths.

    ``tls``: the client's ``(cert, key, ca)``.
    """
    servers = []
    for host in hosts.split(','):
        name, _, port = host.partition(':')
        servers.append({'host': name, 'port': int(port or 2181),
                        'chroot': chroot})
    config = {
        'webapp': {'port': webapp_port, 'listen_address': '127.0.0.1'},
        'zookeeper-servers': servers,
        'zookeeper-tls': dict(zip(('cert', 'key', 'ca'), tls)),
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

    nodepool talks to ZooKeeper over TLS only. The files are named as
    ``tools/test-tls`` names them: ``ca.pem``, ``client.pem`` and
    ``client.key``, and ``server.pem`` (the server's key and certificate,
    ZooKeeper's PEM key store).
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
    files = {'ca.pem': pem(cert=ca), 'server.pem': pem(server_key, server),
             'client.key': pem(client_key), 'client.pem': pem(cert=client)}
    for name, data in files.items():
        with open(os.path.join(tmp, name), 'wb') as f:
            f.write(data)


def _start_zookeeper(tmp):
    """A ZooKeeper server on a free loopback port: ``(process, hosts)``.

    Clients connect over TLS (the files of :func:`_make_tls` in ``tmp``).
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
                % (data, port, os.path.join(tmp, 'server.pem'),
                   os.path.join(tmp, 'ca.pem')))
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
        hosts, tls_dir = args.zookeeper, args.zookeeper_tls
        if hosts is None:
            tls_dir = tmp
            _make_tls(tmp)
            server, hosts = _start_zookeeper(tmp)
            cleanups.callback(_stop, server)
        chroot = '/fleetflow-bench-nodepool-%s' % uuid.uuid4().hex[:8]
        args = argparse.Namespace(**dict(
            vars(args), zookeeper=hosts, zookeeper_tls=tls_dir,
            zookeeper_chroot=chroot, nodepool_client=python))
        cert, key, ca = bench.zk_tls(args)
        zk = kazoo_client.KazooClient(hosts=hosts, use_ssl=True, ca=ca,
                                      keyfile=key, certfile=cert)
        zk.start(timeout=60)
        cleanups.callback(zk.close)
        cleanups.callback(zk.stop)
        zk.ensure_path(chroot)
        cleanups.callback(zk.delete, chroot, recursive=True)
        config, clouds = _config(tmp, hosts, (cert, key, ca), args.nodes,
                                 chroot, _free_port())
        with open(os.path.join(tmp, 'nodepool-launcher.log'), 'w') as log:
            launcher = subprocess.Popen(
                [python, os.path.abspath(__file__), 'launcher',
                 str(args.nodes * 2), '-d', '-c', config],
                stdout=log, stderr=log,
                env=dict(os.environ, OS_CLIENT_CONFIG_FILE=clouds))
        cleanups.callback(_stop, launcher)
        bench.wait(lambda: all(zk.exists('%s/nodepool/components/%s'
                                         % (chroot, kind))
                               and zk.get_children(
                                   '%s/nodepool/components/%s'
                                   % (chroot, kind))
                               for kind in ('launcher', 'pool')),
                   120, 'nodepool\'s launcher to start')
        start = bench.proc_stats(launcher.pid)
        peaks = bench.Peaks([launcher])
        figures = bench.through_zookeeper(args, peaks.sample)
        end = bench.proc_stats(launcher.pid)
    return dict({'system': 'nodepool 11.0.0', 'nodes': args.nodes},
                **bench.latency_figures(args.nodes, **figures), **{
                    'launcher_cpu_s': round(end['cpu'] - start['cpu'], 3),
                    'peak_rss_mb': round(end['peak_rss_mb'], 1),
                    **peaks.figures()})


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
    launcher(int(sys.argv[2]), sys.argv[3:])
