"""Zuul's side of nodepool's ZooKeeper protocol, with nodepool's client.

The child side runs in a virtualenv holding nodepool 11.0.0's ZooKeeper
client (``tools/nodepool-client-venv``), which pins its own kazoo: it
imports nothing of fleetflow. It requests nodes, accepts them as Zuul's
executor does (lock each node, then delete the request), uses, returns
and holds them, and answers one JSON object per line read on its
standard input (``python zk_requester.py serve ...``). ``bench`` submits N
requests at once, returns every node once all are fulfilled, and prints
the times as JSON.

The parent side, :class:`Requester`, starts the child and talks to it;
the ZooKeeper tests and ``fleetflow-bench launcher --zookeeper`` use it.
"""

import argparse
import json
import os
import select
import subprocess
import sys
import time

#: request states after which nothing more happens
FINAL = ('fulfilled', 'failed')


class RequesterError(Exception):
    """The child answered with an error, or died."""


class Requester:
    """A child process playing Zuul's part; see the module docstring.

    :param python: the nodepool client virtualenv's python.
    :param hosts: kazoo's host string (``host:port/chroot``).
    :param tls: ``(cert, key, ca)`` file paths.
    :param client: ``nodepool`` (nodepool's client) or ``zuul`` (Zuul's
        ``ZooKeeperNodepool``, from the python of a virtualenv with zuul).
    """

    def __init__(self, python, hosts, tls, timeout=10.0, stderr=None,
                 client='nodepool'):
        self.proc = subprocess.Popen(
            [python, os.path.abspath(__file__), 'serve', '--hosts', hosts,
             '--cert', tls[0], '--key', tls[1], '--ca', tls[2],
             '--timeout', str(timeout), '--client', client],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            text=True)

    def call(self, op, answer_within=None, **args):
        """The child's answer to ``op``.

        :param answer_within: seconds; a child that does not answer in
            time is killed (its session ends) and RequesterError raised.
        """
        self.proc.stdin.write(json.dumps(dict(args, op=op)) + '\n')
        self.proc.stdin.flush()
        if answer_within is not None and not select.select(
                [self.proc.stdout], [], [], answer_within)[0]:
            self.kill()
            raise RequesterError('%s: no answer in %s s' % (op,
                                                            answer_within))
        line = self.proc.stdout.readline()
        if not line:
            raise RequesterError('the requester died (exit %s)'
                                 % self.proc.wait())
        answer = json.loads(line)
        if 'error' in answer:
            raise RequesterError('%s: %s' % (op, answer['error']))
        return answer['result']

    def close(self):
        if self.proc.poll() is None:
            try:
                self.call('exit')
            except (RequesterError, OSError, ValueError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            stream.close()

    def kill(self):
        """SIGKILL the child: its session, and its locks, end."""
        self.proc.kill()
        self.proc.wait()


def run_bench(python, hosts, tls, count, label, timeout, sample=None):
    """``bench`` in a child process: its figures (see :func:`bench`).

    ``sample`` is called every 50 ms meanwhile.
    """
    proc = subprocess.Popen(
        [python, os.path.abspath(__file__), 'bench', '--hosts', hosts,
         '--cert', tls[0], '--key', tls[1], '--ca', tls[2],
         '--requests', str(count), '--label', label,
         '--wait', str(timeout)],
        stdout=subprocess.PIPE, text=True)
    while proc.poll() is None:
        if sample is not None:
            sample()
        time.sleep(0.05)
    out = proc.stdout.read()
    proc.stdout.close()
    if proc.returncode:
        raise RequesterError('the requester failed (exit %d)'
                             % proc.returncode)
    return json.loads(out)


def layout_keys(address, tls, chroot):
    """The layout keys of a launcher on ZooKeeper ``address`` (TLS)."""
    host, _, port = address.rpartition(':')
    return {'zookeeper-servers': [{'host': host, 'port': int(port),
                                   'chroot': chroot}],
            'zookeeper-tls': dict(zip(('cert', 'key', 'ca'), tls)),
            'zookeeper-timeout': 10.0}


def drop_chroot(address, tls, chroot):
    """Remove what a run left under ``chroot``."""
    from kazoo import client as kazoo_client
    client = kazoo_client.KazooClient(
        hosts=address, use_ssl=True, verify_certs=True, certfile=tls[0],
        keyfile=tls[1], ca=tls[2])
    client.start(timeout=10)
    try:
        client.delete(chroot, recursive=True)
    finally:
        client.stop()
        client.close()


# The child side: nodepool's client only.

class Zuul:
    """What Zuul's scheduler and executor do with nodepool's client."""

    def __init__(self, hosts, cert, key, ca, timeout):
        from nodepool.zk import components
        from nodepool.zk import zookeeper
        from nodepool.zk import ZooKeeperClient
        self.model = zookeeper
        self.client = ZooKeeperClient(hosts, timeout=timeout, tls_cert=cert,
                                      tls_key=key, tls_ca=ca)
        self.client.connect()
        components.COMPONENT_REGISTRY.create(self.client)
        self.zk = zookeeper.ZooKeeper(self.client, enable_cache=False)
        #: node id -> Node objects this side holds the lock of
        self.locked = {}

    def request(self, labels, priority='100', relative_priority=0,
                requestor='fleetflow-test', provider=None):
        request = self.model.NodeRequest()
        request.state = self.model.REQUESTED
        request.node_types = list(labels)
        request.requestor = requestor
        request.relative_priority = relative_priority
        request.provider = provider
        request.created_time = time.time()
        self.zk.storeNodeRequest(request, priority=priority)
        return request.id

    def request_data(self, id):
        request = self.zk.getNodeRequest(id)
        return None if request is None else dict(request.toDict(), id=id)

    def wait(self, id, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            data = self.request_data(id)
            if data is None or data['state'] in FINAL or \
                    time.monotonic() >= deadline:
                return data
            time.sleep(0.02)

    def accept(self, id, timeout=30):
        """Zuul's executor: lock each node, check it, delete the request."""
        request = self.zk.getNodeRequest(id)
        nodes = []
        for node_id in request.nodes:
            node = self.zk.getNode(node_id)
            if node.allocated_to != id:
                raise RuntimeError('node %s is allocated to %s, not %s'
                                   % (node_id, node.allocated_to, id))
            self.zk.lockNode(node, blocking=True, timeout=timeout)
            if node.allocated_to != id:
                raise RuntimeError('node %s changed hands' % node_id)
            self.locked[node_id] = node
            nodes.append(dict(node.toDict(), id=node_id))
        self.zk.deleteNodeRequest(request)
        return nodes

    def _store(self, node_id, **fields):
        node = self.locked[node_id]
        for key, value in fields.items():
            setattr(node, key, value)
        self.zk.storeNode(node)
        return node

    def use(self, nodes):
        for node_id in nodes:
            self._store(node_id, state=self.model.IN_USE,
                        user_data={'zuul': 'test'})

    def give_back(self, nodes, state='used', expiration=None, comment=None):
        """Return nodes (``used``), or hold them, and unlock them."""
        for node_id in nodes:
            fields = dict(state=state)
            if state == self.model.HOLD:
                fields.update(hold_expiration=expiration, comment=comment,
                              hold_job='test-job')
            self.zk.unlockNode(self._store(node_id, **fields))
            del self.locked[node_id]

    def node(self, id):
        node = self.zk.getNode(id)
        return None if node is None else dict(node.toDict(), id=id)

    def nodes(self):
        return [self.node(node_id) for node_id in self.zk.getNodes()]

    def pools(self):
        return [component.content
                for component in self.zk.getRegisteredPools()]

    def drop(self):
        """End the session without unlocking: the locks vanish."""
        self.client.client.stop()
        self.client.client.close()

    def session(self):
        """The id of this side's ZooKeeper session.

        A session that expires (ZooKeeper down for longer than its
        timeout) takes this side's requests (ephemeral) and node locks
        with it; the client goes on with a new one. Disconnected, kazoo
        does not tell whether the session lives: an error, to ask again.
        """
        client_id = self.client.client.client_id
        if client_id is None:
            raise ConnectionError('not connected to ZooKeeper')
        return client_id[0]


class ZuulClient:
    """The same part, with Zuul's own ``ZooKeeperNodepool``.

    As Zuul's scheduler and executor call it: a request is a
    ``zuul.model.NodeRequest``; a node is read with ``updateNode``, locked,
    stored, unlocked.
    """

    def __init__(self, hosts, cert, key, ca, timeout):
        import configparser

        from zuul.lib import tracing
        from zuul import model
        from zuul.zk import nodepool
        from zuul.zk import ZooKeeperClient
        # As Zuul's services start: its spans need a tracer (disabled).
        tracing.Tracing(configparser.ConfigParser())
        self.model = model
        self.client = ZooKeeperClient(hosts, timeout=timeout, tls_cert=cert,
                                      tls_key=key, tls_ca=ca)
        self.client.connect()
        self.zk = nodepool.ZooKeeperNodepool(self.client)
        self.locked = {}

    def request(self, labels, priority='100', relative_priority=0,
                requestor='fleetflow-test', provider=None):
        request = self.model.NodeRequest(
            requestor, 'build-set', 'tenant', 'check', 'job-uuid', 'job',
            list(labels), provider, relative_priority)
        self.zk.submitNodeRequest(request, priority)
        return request.id

    def request_data(self, id):
        request = self.zk.getNodeRequest(id)
        return None if request is None else dict(request.toDict(), id=id)

    wait = Zuul.wait

    def _node(self, id):
        node = self.model.Node(None, None)
        self.zk.updateNode(node, id)
        return node

    def accept(self, id, timeout=30):
        request = self.zk.getNodeRequest(id)
        nodes = []
        for node_id in request.nodes:
            node = self._node(node_id)
            if node.allocated_to != id:
                raise RuntimeError('node %s is allocated to %s, not %s'
                                   % (node_id, node.allocated_to, id))
            self.zk.lockNode(node, blocking=True, timeout=timeout)
            self.zk.updateNode(node, node_id)
            self.locked[node_id] = node
            nodes.append(dict(node.toDict(), id=node_id))
        self.zk.deleteNodeRequest(id)
        return nodes

    _store = Zuul._store

    def use(self, nodes):
        for node_id in nodes:
            self._store(node_id, state='in-use', user_data={'zuul': 'test'})

    def give_back(self, nodes, state='used', expiration=None, comment=None):
        for node_id in nodes:
            fields = dict(state=state)
            if state == 'hold':
                fields.update(hold_expiration=expiration, comment=comment,
                              hold_job='test-job')
            self.zk.unlockNode(self._store(node_id, **fields))
            del self.locked[node_id]

    def node(self, id):
        from kazoo import exceptions
        try:
            return dict(self._node(id).toDict(), id=id)
        except exceptions.NoNodeError:
            return None

    def nodes(self):
        return [self.node(node_id) for node_id in self.zk.getNodes()]

    def pools(self):
        return [{'id': launcher.id,
                 'supported_labels': sorted(launcher.supported_labels)}
                for launcher in self.zk.getRegisteredLaunchers()]

    drop = Zuul.drop
    session = Zuul.session


CLIENTS = {'nodepool': Zuul, 'zuul': ZuulClient}


def serve(zuul):
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop('op')
        if op == 'exit':
            print(json.dumps({'result': None}), flush=True)
            break
        try:
            result = getattr(zuul, op)(**command)
            answer = {'result': result}
        except Exception as e:
            answer = {'error': '%s: %s' % (type(e).__name__, e)}
        print(json.dumps(answer), flush=True)
        if op == 'drop':
            return
    zuul.client.disconnect()


def bench(zuul, count, label, timeout):
    """N one-node requests at once; return the nodes once all fulfilled."""
    started = time.time()
    ids = [zuul.request([label], requestor='fleetflow-bench')
           for _ in range(count)]
    fulfilled, pending = {}, set(ids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for id in list(pending):
            data = zuul.request_data(id)
            if data and data['state'] in FINAL:
                fulfilled[id] = (time.time() - started, data['state'])
                pending.discard(id)
        time.sleep(0.02)
    nodes = []
    for id, (_, state) in fulfilled.items():
        if state == 'fulfilled':
            nodes.extend(node['id'] for node in zuul.accept(id))
    zuul.use(nodes)
    returned = time.time()
    zuul.give_back(nodes)
    while time.monotonic() < deadline and any(
            zuul.zk.getNode(node_id) is not None for node_id in nodes):
        time.sleep(0.05)
    left = sum(1 for node_id in nodes if zuul.zk.getNode(node_id))
    return {
        'requests': count,
        'fulfilled': sum(1 for _, state in fulfilled.values()
                         if state == 'fulfilled'),
        'failed': sum(1 for _, state in fulfilled.values()
                      if state == 'failed'),
        'unanswered': len(pending),
        'fulfil_seconds': sorted(seconds for seconds, state
                                 in fulfilled.values()
                                 if state == 'fulfilled'),
        'all_fulfilled_seconds': (max(s for s, _ in fulfilled.values())
                                  if fulfilled and not pending else None),
        'returned_nodes_deleted_seconds': (time.time() - returned
                                           if not left else None),
        'nodes_left': left,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('mode', choices=('serve', 'bench'))
    parser.add_argument('--hosts', required=True)
    parser.add_argument('--cert', required=True)
    parser.add_argument('--key', required=True)
    parser.add_argument('--ca', required=True)
    parser.add_argument('--timeout', type=float, default=10.0,
                        help='ZooKeeper session timeout')
    parser.add_argument('--client', choices=sorted(CLIENTS),
                        default='nodepool',
                        help="whose ZooKeeper client plays Zuul's part")
    parser.add_argument('-n', '--requests', type=int, default=10)
    parser.add_argument('--label', default='small')
    parser.add_argument('--wait', type=float, default=600,
                        help='bench: seconds to wait for it all')
    args = parser.parse_args(argv)
    zuul = CLIENTS[args.client](args.hosts, args.cert, args.key, args.ca,
                                args.timeout)
    if args.mode == 'serve':
        serve(zuul)
        return 0
    result = bench(zuul, args.requests, args.label, args.wait)
    zuul.client.disconnect()
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
