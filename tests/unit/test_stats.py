"""The stat keys of launches and the gauges of a pass."""

import socket
import tempfile
import time
from unittest import mock

from taskflow import states as tf_states
from taskflow.types import failure as tf_failure
import testtools

from fleetflow.drivers import base as driver_base
from fleetflow import exceptions
from fleetflow import layout
from fleetflow import stats
from tests import base


def failure_of(error):
    try:
        raise error
    except Exception:
        return tf_failure.Failure()


class TestStatKey(testtools.TestCase):

    def test_the_exception_names_nodepools_key(self):
        for error, key in (
                (driver_base.QuotaError('over quota'), 'error.quota'),
                (driver_base.CapacityError('no valid host'),
                 'error.capacity'),
                (exceptions.InstanceErrorState('ERROR'), 'error.status'),
                (exceptions.LaunchTimeout('slow'),
                 'error.servercreatetimeout'),
                (exceptions.HostKeyMismatch('other keys'), 'error.keyscan'),
                (driver_base.RateLimitError('429'), 'error.unknown'),
                (driver_base.NotFound('gone'), 'error.unknown')):
            self.assertEqual(key, stats.stat_key([failure_of(error)]))

    def test_a_restored_failure_is_matched_by_class_name(self):
        # A failure read back from a logbook has no exception object.
        restored = tf_failure.Failure.from_dict(
            failure_of(exceptions.LaunchTimeout('too slow')).to_dict())
        self.assertIsNone(restored.exception)
        self.assertEqual('error.servercreatetimeout',
                         stats.stat_key([restored]))

    def test_anything_else_is_unknown(self):
        self.assertEqual('error.unknown',
                         stats.stat_key([failure_of(ValueError('bad'))]))
        self.assertEqual('error.unknown', stats.stat_key([]))


class TestGauges(testtools.TestCase):
    """What a pass sends, received on a real UDP socket."""

    def setUp(self):
        super().setUp()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.sock.close)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.settimeout(5)
        conf = base.make_conf(tempfile.gettempdir())
        conf.set_override('statsd_host', '127.0.0.1', 'stats')
        conf.set_override('statsd_port', self.sock.getsockname()[1],
                          'stats')
        conf.set_override('statsd_prefix', 'nodepool', 'stats')
        self.stats = stats.Stats(conf)
        provider = base.fake_provider(labels=('small', 'large'))
        provider['pools'][0]['max-servers'] = 7
        provider['pools'].append({'name': 'spare', 'max-servers': 3,
                                  'labels': [{'name': 'small'}]})
        self.layout = layout.Layout({
            'labels': [{'name': 'small'}, {'name': 'large'}],
            'providers': [provider]})

    def gauges(self, nodes, requests=()):
        self.stats.pass_gauges(self.layout, nodes, list(requests))
        received = {}
        # one packet per pipeline, unless it is larger than a datagram
        while True:
            try:
                data = self.sock.recv(65536).decode()
            except socket.timeout:
                break
            for line in data.splitlines():
                key, _, rest = line.partition(':')
                value, _, kind = rest.partition('|')
                self.assertEqual('g', kind)
                received[key] = float(value)
            self.sock.settimeout(0.2)
        self.sock.settimeout(5)
        return received

    def node(self, state, label='small', provider='fake-1'):
        return {'state': state, 'label': label, 'provider': provider}

    def test_counts_with_every_state_zero_filled(self):
        got = self.gauges([self.node('ready'), self.node('ready'),
                           self.node('in-use', label='large')])
        self.assertEqual(2, got['nodepool.nodes.ready'])
        self.assertEqual(2, got['nodepool.provider.fake-1.nodes.ready'])
        self.assertEqual(2, got['nodepool.label.small.nodes.ready'])
        self.assertEqual(1, got['nodepool.label.large.nodes.in-use'])
        for key in ('nodepool.nodes.hold', 'nodepool.nodes.deleting',
                    'nodepool.provider.fake-1.nodes.failed',
                    'nodepool.label.large.nodes.ready',
                    'nodepool.label.small.nodes.in-use'):
            self.assertEqual(0, got[key], key)
        self.assertEqual(10, got['nodepool.provider.fake-1.max_servers'])

    def test_gone_keys_go_to_zero(self):
        # a node of a provider no longer in the layout
        got = self.gauges([self.node('used', provider='old')])
        self.assertEqual(1, got['nodepool.provider.old.nodes.used'])
        got = self.gauges([])
        self.assertEqual(0, got['nodepool.provider.old.nodes.used'])
        self.assertEqual(0, got['nodepool.nodes.used'])
        got = self.gauges([])
        self.assertNotIn('nodepool.provider.old.nodes.used', got)

    def test_addressable_requests(self):
        got = self.gauges([], [{'labels': ['small']},
                               {'labels': ['small', 'large']},
                               {'labels': ['huge']}])
        self.assertEqual(
            2, got['nodepool.provider.fake-1.pool.main.addressable_requests'])
        self.assertEqual(
            1, got['nodepool.provider.fake-1.pool.spare.addressable_requests'])

    def test_key_parts_from_outside_are_made_safe(self):
        self.assertEqual('zuul_example_org_tenant',
                         stats.key_part('zuul.example.org:tenant'))


class TestLaunchResults(testtools.TestCase):
    """What a launch flow's end sends, from its storage and its node."""

    def send(self, node, request=None):
        engine = mock.Mock()
        engine.storage.flow_name = 'launch-n1'
        engine.storage.fetch.side_effect = {'node_id': 'n1',
                                            'provider': 'fake-1'}.get
        ctx = mock.Mock()
        ctx.store.find_node.return_value = node
        ctx.store.get_request.return_value = request
        stats.LaunchResults(engine, ctx)._flow_receiver(
            tf_states.SUCCESS, {})
        [call] = ctx.stats.launch_result.call_args_list
        return call.args[:4]

    def test_a_requests_node(self):
        node = {'request_id': 'r1', 'az': 'nova',
                'created_at': time.time() - 5}
        self.assertEqual(('fake-1', 'nova', 'zuul', 'ready'),
                         self.send(node, {'requestor': 'zuul'}))

    def test_a_spare_is_min_readys(self):
        node = {'request_id': None, 'az': None, 'created_at': time.time()}
        self.assertEqual(('fake-1', None, 'NodePool:min-ready', 'ready'),
                         self.send(node))
