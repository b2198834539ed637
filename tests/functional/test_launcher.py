"""The launcher service as it runs: a ``fleetflow-launcher`` process.

Each test writes a config file and a layout with the fake driver
(:class:`tests.unit.test_cli.CliEnv`), starts the real launcher process,
drives it through :class:`fleetflow.client.Client` as a consumer does, and
counts what is in the fake cloud, whose SQLite file the test shares with
the launcher: ``instance_history()`` (every instance ever made, with its
node tag, creation and deletion times) and ``call_counts()``.

Where a test must know that the launcher has looked at something (a
request that has to wait, a leak that must survive one cleanup pass), it
reads the pass counters of the status endpoint's ``/health`` instead of
sleeping.
"""

import collections
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import fixtures
from testtools import content
import yaml

from fleetflow import client as ff_client
from fleetflow.drivers import base as driver_base
from fleetflow import layout as ff_layout
from tests import base
from tests import board_servers
from tests.functional import test_cli as functional_cli
from tests.unit import test_cli

LATENCY = 0.2
#: Flow states after which a flow does nothing more.
FINISHED = ('SUCCESS', 'REVERTED', 'FAILURE')


def free_port():
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout=30, message=None):
    return functional_cli.wait_for(predicate, timeout=timeout,
                                   interval=0.05, message=message)


class LauncherProcess(functional_cli.LauncherProcess):
    """The launcher process, with a log of its own per start (``name``)."""

    def __init__(self, env, name='launcher'):
        super().__init__(env)
        self.name = name

    def _setUp(self):
        self.log_path = os.path.join(self.env.path, self.name + '.log')
        self.log = open(self.log_path, 'w')
        self.addCleanup(self.log.close)
        self.proc = subprocess.Popen(
            functional_cli.script('fleetflow-launcher')
            + ['--config-file', self.env.conf_path],
            stdout=self.log, stderr=subprocess.STDOUT,
            # a process group of its own, as a terminal's or a unit's
            start_new_session=True)
        self.addCleanup(self.stop)
        self.addDetail(self.name + '-log', content.content_from_file(
            self.log_path, buffer_now=False))

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()


def layout(min_ready=0, max_ready_age=None, max_servers=None,
           providers=None, **provider_args):
    """Labels ``small`` and ``large`` from fake provider ``fake-1``.

    The fake cloud of every provider is ``fake-cloud.sqlite`` in the state
    directory (the fake driver's default), the file the test reads.
    """
    small = {'name': 'small', 'min-ready': min_ready}
    if max_ready_age is not None:
        small['max-ready-age'] = max_ready_age
    provider_args.setdefault('quota', {'instances': 10})
    provider = base.fake_provider(labels=('small', 'large'),
                                  **provider_args)
    if max_servers is not None:
        provider['pools'][0]['max-servers'] = max_servers
    return {'labels': [small, {'name': 'large'}],
            'providers': [provider] + list(providers or ())}


class LauncherTestCase(base.TestCase):

    TIMEOUT = 120

    def start(self, layout_data=None, conf=None, status=False, launch=True,
              **layout_args):
        """Write config and layout, sync the database, start a launcher.

        ``launch=False``: all but the launcher (:meth:`start_launcher`).
        """
        layout_args.setdefault('create_latency', LATENCY)
        options = {'launcher': {'request_interval': 0.2}}
        for section, values in (conf or {}).items():
            options.setdefault(section, {}).update(values)
        self.status_url = None
        if status:
            port = free_port()
            options['status_api'] = {'enabled': 'true', 'bind_port': port}
            self.status_url = 'http://127.0.0.1:%d' % port
        self.env = self.useFixture(test_cli.CliEnv(
            layout=layout_data or layout(**layout_args), conf=options))
        self.client = ff_client.Client(base.make_conf(self.env.state_path),
                                       poll_interval=0.1)
        self.addCleanup(self.client.close)
        self.cloud = self.driver(base.PROVIDER)
        if launch:
            self.launcher = self.start_launcher()
        return self.env

    def start_launcher(self, name='launcher'):
        return self.useFixture(LauncherProcess(self.env, name))

    def driver(self, provider):
        """The fake cloud of ``provider`` as this process sees it."""
        entry = ff_layout.load(self.env.layout_path).providers[provider]
        return entry['driver-class'](entry,
                                     base.make_conf(self.env.state_path))

    # Looking at the cloud

    def history(self, node_id=None, cloud=None):
        rows = (cloud or self.cloud).instance_history()
        if node_id is None:
            return rows
        return [row for row in rows if row['node_id'] == node_id]

    def alive(self, cloud=None):
        """Instances not deleted, by node tag: ``{node_id: [ids]}``."""
        alive = collections.defaultdict(list)
        for row in self.history(cloud=cloud):
            if row['gone_at'] is None:
                alive[row['node_id']].append(row['external_id'])
        return dict(alive)

    def creates(self):
        return self.cloud.call_counts()['create']

    def leak(self, node_id='no-such-node', provider=base.PROVIDER):
        """An instance in the cloud, tagged as ``provider``'s."""
        return self.cloud.create_instance(
            node_id, {'name': base.POOL}, {'name': 'small'},
            {driver_base.META_NODE_ID: node_id,
             driver_base.META_PROVIDER: provider,
             driver_base.META_POOL: base.POOL})

    # The status endpoint

    def get(self, path):
        """``(HTTP status, parsed JSON)`` of a status endpoint path."""
        try:
            with urllib.request.urlopen(self.status_url + path,
                                        timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            with e:
                return e.code, json.loads(e.read())

    def health(self):
        """``/health``, once the endpoint answers."""
        def answer():
            try:
                return self.get('/health')[1]
            except OSError:
                return None
        return wait_for(answer, message='the status endpoint does not '
                        'answer')

    def wait_passes(self, count=3):
        """Wait until ``count`` passes have run since the call.

        The pass that is under way when this is called counts at most as
        one, so ``count - 1`` passes began after the call.
        """
        start = self.health()['passes']
        wait_for(lambda: self.health()['passes'] >= start + count,
                 message='the launcher made no %d passes' % count)

    # Requests and nodes

    def fulfilled(self, labels, timeout=30):
        """Create a request, wait until it is fulfilled; return it."""
        request = self.client.create_request(labels)
        request = self.client.wait_for_request(request['id'],
                                               timeout=timeout)
        self.assertEqual('fulfilled', request['state'], request)
        return request

    def spares(self, label='small'):
        return [node for node in self.client.list_nodes(
            states=['ready'], label=label) if node['request_id'] is None]

    def flow_states(self, node_id):
        """``{flow name: state}`` of the node's flows, from the logbook."""
        return {row['flow']: row['state']
                for row in self.env.json('flow', 'show', node_id)
                if row['kind'] == 'flow'}


class TestServing(LauncherTestCase):
    """Requests served: launched, reused, declined, waiting for quota."""

    def test_requests_of_several_labels(self):
        self.start()
        requests = [self.client.create_request(labels) for labels in (
            ['small', 'large'], ['small'], ['large'], ['large', 'large'])]
        seen = set()
        for request in requests:
            done = self.client.wait_for_request(request['id'], timeout=30)
            self.assertEqual('fulfilled', done['state'], done)
            nodes = self.client.request_nodes(request['id'])
            self.assertEqual(sorted(request['labels']),
                             sorted(node['label'] for node in nodes))
            self.assertEqual(sorted(done['nodes']),
                             sorted(node['id'] for node in nodes))
            for node in nodes:
                self.assertEqual(('in-use', request['id']),
                                 (node['state'], node['request_id']))
                self.assertEqual([node['external_id']],
                                 self.alive().get(node['id']), node)
            seen.update(node['id'] for node in nodes)
        self.assertEqual(6, len(seen))
        self.assertEqual(seen, set(self.alive()))
        self.assertEqual(6, self.creates())

        for request in requests:
            self.client.release_request(request['id'])
        wait_for(lambda: not self.client.list_nodes(),
                 message='released nodes not deleted')
        self.assertEqual({}, self.alive())

    def test_ready_spare_is_reused(self):
        self.start(min_ready=1)
        spare = wait_for(self.spares)[0]
        self.assertEqual(1, len(self.history(spare['id'])))
        asked_at = time.time()
        request = self.fulfilled(['small'])
        # The spare, with the instance it had: nothing made for it.
        self.assertEqual([spare['id']], request['nodes'])
        node = self.client.get_node(spare['id'])
        self.assertEqual(('in-use', request['id'], spare['external_id']),
                         (node['state'], node['request_id'],
                          node['external_id']))
        made = self.history(spare['id'])
        self.assertEqual([spare['external_id']],
                         [row['external_id'] for row in made])
        self.assertLess(made[0]['created'], asked_at)
        # min-ready makes a new spare; that is the only other create.
        refill = wait_for(self.spares)[0]
        self.assertNotEqual(spare['id'], refill['id'])
        self.assertEqual({spare['id']: [spare['external_id']],
                          refill['id']: [refill['external_id']]},
                         self.alive())
        self.assertEqual(2, self.creates())

    def test_unknown_label_declined(self):
        self.start()
        for labels, unknown in ((['gpu'], 'gpu'),
                                (['small', 'gpu', 'tpu'], 'gpu, tpu')):
            request = self.client.create_request(labels)
            request = self.client.wait_for_request(request['id'],
                                                   timeout=30)
            self.assertEqual(('failed', 'unknown label(s): %s' % unknown),
                             (request['state'], request['reason']))
            self.assertEqual([], request['nodes'])
        self.assertEqual([], self.client.list_nodes())
        self.assertEqual(0, self.creates())
        # A declined request does not stop the others.
        self.fulfilled(['small'])

    def test_no_capacity_serves_the_request_again_later(self):
        self.start(faults={'capacity-error': 1.0}, conf={
            'launcher': {'aborted_request_delay': 0.5}})
        request = self.client.create_request(['small'])
        # Each try: an instance made, in ERROR for capacity, deleted; the
        # node aborted and deleted; the request served again.
        wait_for(lambda: 'a node was aborted (cloud quota or capacity)' in (
            self.client.get_request(request['id'])['reason'] or ''),
            message='the request was not put back')
        wait_for(lambda: len(self.history()) >= 2,
                 message='the request was not served a second time')
        self.launcher.stop()
        self.assertIn('Launch aborted: instance', self.launcher.read_log())
        self.assertIn('no valid host', self.launcher.read_log())

        # Capacity is back: the same request is fulfilled (a try the stop
        # left unfinished is resumed, and ends as the others did).
        with open(self.env.layout_path, 'w') as f:
            yaml.safe_dump(layout(create_latency=LATENCY), f)
        self.start_launcher('launcher-2')
        done = self.client.wait_for_request(request['id'], timeout=30)
        self.assertEqual('fulfilled', done['state'], done)
        [node_id] = done['nodes']
        # Every instance of the tries that failed is deleted, with its node.
        wait_for(lambda: len(self.client.list_nodes()) == 1,
                 message='aborted nodes not deleted')
        self.assertEqual(
            {node_id: [self.client.get_node(node_id)['external_id']]},
            self.alive())

    def test_full_pool_makes_requests_wait(self):
        self.start(max_servers=2, status=True)
        first = self.fulfilled(['small'])
        self.fulfilled(['large'])
        waiting = self.client.create_request(['small'])
        self.wait_passes()
        request = self.client.get_request(waiting['id'])
        self.assertEqual(('requested', []),
                         (request['state'], request['nodes']))
        self.assertEqual(2, self.creates())
        self.assertEqual(2, len(self.client.list_nodes()))

        # A node handed back and deleted makes room for it.
        self.client.release_request(first['id'])
        request = self.client.wait_for_request(waiting['id'], timeout=30)
        self.assertEqual('fulfilled', request['state'], request)
        self.assertEqual(3, self.creates())
        self.assertNotIn(first['nodes'][0],
                         [node['id'] for node in self.client.list_nodes()])
        self.assertNotIn(first['nodes'][0], self.alive())


class TestSpares(LauncherTestCase):
    """min-ready, max-ready-age and holds."""

    def test_min_ready_kept(self):
        self.start(min_ready=2, status=True)
        first = wait_for(lambda: len(self.spares()) == 2 and self.spares())
        self.wait_passes()
        self.assertEqual(2, len(self.client.list_nodes()))
        self.assertEqual(2, self.creates())

        request = self.fulfilled(['small'])
        taken = request['nodes'][0]
        self.assertIn(taken, [node['id'] for node in first])
        again = wait_for(lambda: len(self.spares()) == 2 and self.spares())
        self.assertNotIn(taken, [node['id'] for node in again])
        self.wait_passes()
        self.assertEqual(3, len(self.client.list_nodes(label='small')))
        self.assertEqual(3, self.creates())

    def test_max_ready_age_replaces_spare(self):
        max_age = 2
        self.start(min_ready=1, max_ready_age=max_age)
        old = wait_for(self.spares)[0]
        new = wait_for(lambda: [node for node in self.spares()
                                if node['id'] != old['id']])[0]
        wait_for(lambda: old['id'] not in [
            node['id'] for node in self.client.list_nodes()],
            message='the old spare was not deleted')
        made = self.history(old['id'])
        self.assertEqual(1, len(made))
        self.assertIsNotNone(made[0]['gone_at'])
        self.assertGreaterEqual(made[0]['gone_at'] - old['ready_at'],
                                max_age)
        self.assertGreater(new['created_at'], old['ready_at'] + max_age)
        self.assertEqual([new['external_id']], [
            row['external_id'] for row in self.history(new['id'])])

    def test_hold_and_release(self):
        self.start(status=True)
        request = self.fulfilled(['small'])
        node_id = request['nodes'][0]
        held = self.client.hold_node(node_id, reason='debugging')
        self.assertEqual(('hold', 'debugging'),
                         (held['state'], held['hold_reason']))
        self.client.release_request(request['id'])
        self.wait_passes()
        node = self.client.get_node(node_id)
        self.assertEqual(('hold', None), (node['state'],
                                          node['request_id']))
        self.assertEqual([node['external_id']], self.alive()[node_id])

        self.assertEqual('used', self.client.release_node(node_id)['state'])
        self.client.wait_node_gone(node_id, timeout=30)
        self.assertNotIn(node_id, self.alive())

    def test_hold_expires(self):
        self.start()
        request = self.fulfilled(['small'])
        node_id = request['nodes'][0]
        expires = 1.5
        held_at = time.time()
        self.client.hold_node(node_id, expires_seconds=expires)
        self.client.release_request(request['id'])
        self.client.wait_node_gone(node_id, timeout=30)
        made = self.history(node_id)
        self.assertEqual(1, len(made))
        self.assertGreaterEqual(made[0]['gone_at'], held_at + expires)


class TestLeaks(LauncherTestCase):

    CLEANUP_INTERVAL = 3.0

    def test_leak_deleted_on_second_pass(self):
        # An unowned instance tagged as fake-1's, there before the
        # launcher starts: every cleanup pass sees it.
        self.start(min_ready=1, status=True, launch=False, conf={
            'launcher': {'cleanup_interval': self.CLEANUP_INTERVAL}})
        leak = self.leak()
        foreign = self.leak('someone-elses-node', provider='other-cloud')
        self.start_launcher()

        # /health reads cleanup_passes, then leaked. A pass counts what it
        # deletes before it counts itself at its end, so a look that finds
        # pass n done and nothing deleted shows that passes 1 to n left
        # the leak alone; one that finds pass n done shows whatever they
        # deleted.
        def passes_done(count):
            def look():
                health = self.health()
                return health['cleanup_passes'] >= count and health
            return wait_for(look, timeout=60,
                            message='no %d cleanup passes' % count)

        # The first pass: seen, not deleted. (The next one comes
        # cleanup_interval later: time enough to look.)
        self.assertEqual({}, passes_done(1)['leaked'])
        # The second pass: deleted.
        health = passes_done(2)
        self.assertEqual({base.PROVIDER: {'instance': 1}}, health['leaked'])
        self.assertIsNotNone(self.history(leak.node_id)[0]['gone_at'])
        # What a node owns, and what is not fake-1's, stays.
        spare = self.spares()[0]
        self.assertEqual([spare['external_id']], self.alive()[spare['id']])
        self.assertEqual([foreign.external_id],
                         self.alive()[foreign.node_id])


class TestRestart(LauncherTestCase):
    """A launcher stopped or killed while nodes build; the next resumes."""

    def building(self, count):
        """Wait for ``count`` instances; return the request and nodes."""
        request = self.client.create_request(['small'] * count)
        wait_for(lambda: len(self.history()) == count,
                 message='instances not created')
        nodes = self.client.list_nodes()
        self.assertEqual(['building'] * count,
                         [node['state'] for node in nodes])
        return request, nodes

    def resumed(self, request, nodes, count):
        """The second launcher finishes the same nodes, one instance each."""
        launcher = self.start_launcher('launcher-2')
        done = self.client.wait_for_request(request['id'], timeout=60)
        self.assertEqual('fulfilled', done['state'], done)
        self.assertEqual(sorted(node['id'] for node in nodes),
                         sorted(done['nodes']))
        for node in nodes:
            node = self.client.get_node(node['id'])
            made = self.history(node['id'])
            self.assertEqual([node['external_id']],
                             [row['external_id'] for row in made], node)
            self.assertEqual({'launch-%s' % node['id']: 'SUCCESS'},
                             self.flow_states(node['id']))
        # No leak, no double: every live instance is a node's only one.
        self.assertEqual({node['id']: [self.client.get_node(
            node['id'])['external_id']] for node in nodes}, self.alive())
        self.assertEqual(count, self.creates())
        self.assertIn('%d unfinished flows resumed' % count,
                      launcher.read_log())

    def unfinished(self, nodes):
        for node in nodes:
            flows = self.flow_states(node['id'])
            self.assertEqual(['launch-%s' % node['id']], list(flows))
            self.assertNotIn(flows['launch-%s' % node['id']], FINISHED)

    def test_sigterm_then_resume(self):
        latency = 5.0
        self.start(create_latency=latency)
        request, nodes = self.building(2)
        ready_at = min(row['created'] for row in self.history()) + latency
        proc = self.launcher.proc
        proc.send_signal(signal.SIGTERM)
        sent = time.time()
        rc = proc.wait(latency)
        exited = time.time()
        self.addDetail('stop-seconds', content.text_content(
            '%.3f (%.3f before the first instance was active)'
            % (exited - sent, ready_at - exited)))
        self.assertEqual(0, rc)
        # It stopped while the instances were still building: it did not
        # wait for them.
        self.assertLess(exited, ready_at)
        self.assertIn('Stopping: no new flows', self.launcher.read_log())
        self.unfinished(nodes)
        self.assertEqual(['building', 'building'],
                         [node['state'] for node in
                          self.client.list_nodes()])

        self.resumed(request, nodes, 2)

    def test_sigkill_then_resume(self):
        latency = 2.0
        self.start(create_latency=latency)
        request, nodes = self.building(3)
        self.launcher.proc.kill()
        self.launcher.proc.wait()
        self.unfinished(nodes)
        self.resumed(request, nodes, 3)


class TestStatusEndpoint(LauncherTestCase):

    def test_status_endpoint(self):
        self.start(min_ready=1, status=True)
        request = self.fulfilled(['small', 'large'])

        def labels():
            rows = self.get('/labels')[1]
            return rows if rows[1]['ready'] == 1 else None
        self.assertEqual(
            [{'name': 'large', 'min_ready': 0, 'ready': 0, 'building': 0,
              'in_use': 1},
             {'name': 'small', 'min_ready': 1, 'ready': 1, 'building': 0,
              'in_use': 1}], wait_for(labels))

        code, health = self.get('/health')
        self.assertEqual(200, code)
        self.assertEqual(('ok', 'test-host', {}),
                         (health['status'], health['host'],
                          health['leaked']))
        self.assertGreater(health['passes'], 0)
        self.assertIsInstance(health['flows_running'], int)
        self.assertEqual(set(health), set(self.get('/')[1]))

        nodes = self.client.list_nodes()
        code, body = self.get('/nodes')
        self.assertEqual(200, code)
        self.assertEqual({node['id']: (node['state'], node['label'],
                                       node['request_id'])
                          for node in nodes},
                         {node['id']: (node['state'], node['label'],
                                       node['request_id'])
                          for node in body})
        self.assertEqual(body, self.get('/nodes/')[1])

        code, body = self.get('/requests')
        self.assertEqual(200, code)
        self.assertEqual([(request['id'], 'fulfilled', ['small', 'large'])],
                         [(r['id'], r['state'], r['labels'])
                          for r in body])

        code, body = self.get('/providers')
        self.assertEqual(200, code)
        self.assertEqual([{'name': base.PROVIDER, 'driver': 'fake',
                           'limits': {'instances': 10, 'cores': None,
                                      'ram': None},
                           'used': {'instances': 3, 'cores': 3,
                                    'ram': 3072},
                           'nodes': 3}], body)

        code, body = self.get('/no/such/path')
        self.assertEqual(404, code)
        self.assertEqual({'error': 'no such path: /no/such/path',
                          'paths': ['/health', '/labels', '/nodes',
                                    '/providers', '/requests']}, body)


class StatsdServer(fixtures.Fixture):
    """A UDP socket on loopback that collects what statsd clients send."""

    def _setUp(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.sock.close)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        #: ``{key: [(value, type), ...]}`` in the order received
        self.metrics = collections.defaultdict(list)

    def receive(self):
        """Read what arrived; return :attr:`metrics`."""
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return self.metrics
            for line in data.decode().splitlines():
                key, _, rest = line.partition(':')
                value, _, kind = rest.partition('|')
                self.metrics[key].append((float(value), kind))

    def values(self, key, kind):
        return [value for value, k in self.receive().get(key, ())
                if k == kind]


#: nodepool 11.0.0's launcher keys, from its operation guide
#: (doc/source/operation.rst), with ``<part>`` for one key part
NODEPOOL_KEYS = (
    'nodepool.nodes.<state>',
    'nodepool.label.<label>.nodes.<state>',
    'nodepool.provider.<provider>.max_servers',
    'nodepool.provider.<provider>.nodes.<state>',
    'nodepool.provider.<provider>.leaked.<kind>',
    'nodepool.provider.<provider>.pool.<pool>.addressable_requests',
    'nodepool.launch.<result>',
    'nodepool.launch.provider.<provider>.<result>',
    'nodepool.launch.provider.<provider>.<az>.<result>',
    'nodepool.launch.requestor.<requestor>.<result>',
)
#: the values the guide lists for its parts (states, leak kinds, results)
NODEPOOL_PARTS = {
    'state': {'building', 'deleting', 'failed', 'in-use', 'ready', 'used',
              'hold', 'aborted'},
    'kind': {'amis', 'disks', 'floatingips', 'images', 'instances', 'nics',
             'objects', 'pips', 'ports', 'snapshots', 'volumes'},
    'result': {'ready', 'error.zksession', 'error.quota', 'error.unknown',
               'error.capacity', 'error.status', 'error.keyscan',
               'error.servercreatetimeout'},
}


def documented(key):
    """The nodepool key template ``key`` is an instance of, or None."""
    for template in NODEPOOL_KEYS:
        pattern = re.escape(template)
        for part in re.findall(r'<(\w+)>', template):
            values = NODEPOOL_PARTS.get(part)
            choice = ('(?:%s)' % '|'.join(map(re.escape, values))
                      if values else r'[^.]+')
            pattern = pattern.replace(re.escape('<%s>' % part), choice)
        if re.fullmatch(pattern, key):
            return template
    return None


class TestStats(LauncherTestCase):

    def start_with_statsd(self, conf=None, prefix='nodepool'):
        """A launcher sending to a statsd server, which is returned.

        Provider fake-2's label ``broken`` fails every launch.
        """
        statsd = self.useFixture(StatsdServer())
        broken = base.fake_provider(name='fake-2', labels=('broken',),
                                    faults={'instance-error': 1.0},
                                    launch_retries=1)
        data = layout(providers=[broken], create_latency=LATENCY)
        data['labels'].append({'name': 'broken'})
        options = {'stats': {'statsd_host': '127.0.0.1',
                             'statsd_port': statsd.port,
                             'statsd_prefix': prefix},
                   'launcher': {'cleanup_interval': 0.5}}
        options.update(conf or {})
        self.start(layout_data=data, conf=options)
        return statsd

    def check_launch_keys(self, statsd, prefix='nodepool'):
        """A ready launch and a failed one send their timer and counter."""
        request = self.client.create_request(['small'],
                                             requestor='zuul.example:ci')
        self.assertEqual('fulfilled', self.client.wait_for_request(
            request['id'], timeout=30)['state'])
        for scope in ('', 'provider.fake-1.', 'provider.fake-1.fake-az.',
                      'requestor.zuul_example_ci.'):
            key = '%s.launch.%sready' % (prefix, scope)
            wait_for(lambda: statsd.values(key, 'ms')
                     and statsd.values(key, 'c'),
                     message='no timer and counter %s' % key)
            timers = statsd.values(key, 'ms')
            # From the node's creation: at least the create latency.
            self.assertEqual(1, len(timers), key)
            self.assertGreaterEqual(timers[0], LATENCY * 1000)
            self.assertEqual([1.0], statsd.values(key, 'c'))

        request = self.client.create_request(['broken'])
        request = self.client.wait_for_request(request['id'], timeout=30)
        self.assertEqual('failed', request['state'])
        self.assertIn('went to ERROR', request['reason'])
        # (a node that never became active has no zone)
        for scope in ('', 'provider.fake-2.'):
            key = '%s.launch.%serror.status' % (prefix, scope)
            wait_for(lambda: statsd.values(key, 'ms')
                     and statsd.values(key, 'c'),
                     message='no timer and counter %s' % key)
            self.assertEqual([1.0], statsd.values(key, 'c'))
            self.assertEqual(1, len(statsd.values(key, 'ms')), key)
        return request

    def test_launch_use_delete_cycle_sends_nodepool_keys(self):
        statsd = self.start_with_statsd()
        self.check_launch_keys(statsd)
        [request] = self.client.list_requests(states=['fulfilled'])
        [node] = self.client.request_nodes(request['id'])

        # Gauges of every pass: the in-use node counts, the other states
        # are sent as 0.
        for key in ('nodepool.nodes.in-use',
                    'nodepool.provider.fake-1.nodes.in-use',
                    'nodepool.label.small.nodes.in-use'):
            wait_for(lambda: statsd.values(key, 'g')[-1:] == [1.0],
                     message='no gauge %s of 1' % key)
        wait_for(lambda: statsd.values(
            'nodepool.label.large.nodes.ready', 'g')[-1:] == [0.0],
            message='no zero gauge of an unused label')

        # Used and deleted: the gauges go back to 0 instead of staying.
        self.client.release_request(request['id'])
        self.client.wait_node_gone(node['id'], timeout=30)
        for key in ('nodepool.nodes.in-use',
                    'nodepool.provider.fake-1.nodes.in-use',
                    'nodepool.provider.fake-1.nodes.used',
                    'nodepool.label.small.nodes.used'):
            wait_for(lambda: statsd.values(key, 'g')[-1:] == [0.0],
                     message='gauge %s not back to 0' % key)
        self.assertEqual(
            [0.0], statsd.values('nodepool.provider.fake-1.max_servers',
                                 'g')[-1:])

        # (counted by the unit tests)
        self.assertEqual([0.0], statsd.values(
            'nodepool.provider.fake-1.pool.main.addressable_requests',
            'g')[-1:])

        leak = self.leak()
        wait_for(lambda: statsd.values(
            'nodepool.provider.fake-1.leaked.instances', 'c') == [1.0],
            message='no leaked counter')
        self.assertIsNotNone(self.history(leak.node_id)[0]['gone_at'])

        keys = set(statsd.receive())
        self.assertEqual([], sorted(key for key in keys
                                    if documented(key) is None))
        # and every one of them was sent
        self.assertEqual(set(NODEPOOL_KEYS), {documented(key)
                                              for key in keys})

    def test_launch_keys_from_a_conductor(self):
        # With a jobboard the flows run in a conductor, not the runner.
        address = board_servers.address(self, 'redis')
        statsd = self.start_with_statsd({'jobboard': {
            'enabled': 'true', 'backend': 'redis', 'hosts': address,
            'namespace': board_servers.namespace(self, 'redis', address)}},
            prefix='fleetflow')
        self.check_launch_keys(statsd, prefix='fleetflow')
