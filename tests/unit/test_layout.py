"""Loading and validating the layout file."""

import collections
import os
import tempfile

import testtools
import yaml

from fleetflow import exceptions
from fleetflow import layout

EXAMPLE = """
labels:
  - name: small
    min-ready: 0
providers:
  - name: fake-1
    driver: fake
    launch-retries: 3
    launch-timeout: 600
    boot-timeout: 60
    create-latency: 0.1
    faults: {create-error: 0.1, instance-error: 0.1, quota-error: 0.05,
             rate-limit: 0.05, delete-error: 0.1}
    quota: {instances: 10}
    pools:
      - name: main
        max-servers: 50
        host-key-checking: false
        labels:
          - name: small
            cloud-image: fake-image
            flavor-name: small
"""


class TestLayout(testtools.TestCase):

    def _write(self, text):
        fd, path = tempfile.mkstemp(suffix='.yaml')
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path

    def _error(self, mutate):
        data = yaml.safe_load(EXAMPLE)
        mutate(data)
        path = self._write(yaml.safe_dump(data))
        error = self.assertRaises(exceptions.ConfigError, layout.load, path)
        self.assertIn(path, str(error))
        return str(error)

    def test_example_loads_with_defaults(self):
        loaded = layout.load(self._write(EXAMPLE))
        self.assertEqual({'small'}, set(loaded.labels))
        provider = loaded.providers['fake-1']
        self.assertEqual(3, provider['launch-retries'])
        pool = provider['pools'][0]
        self.assertFalse(pool['host-key-checking'])
        self.assertEqual('ssh', pool['labels'][0]['connection-type'])
        self.assertEqual([('fake-1', 'main')],
                         [(p['name'], pl['name'])
                          for p, pl in loaded.pools_serving(['small'])])
        self.assertEqual([], list(loaded.pools_serving(['small', 'big'])))

    def test_unknown_key_is_named(self):
        def mutate(data):
            data['providers'][0]['pools'][0]['max-serverz'] = 3
        self.assertIn('providers[0].pools[0].max-serverz',
                      self._error(mutate))

    def test_unknown_top_level_key_is_named(self):
        self.assertIn('lables', self._error(
            lambda data: data.update(lables=[])))

    def test_wrong_type_is_named(self):
        def mutate(data):
            data['providers'][0]['launch-retries'] = 'three'
        self.assertIn('providers[0].launch-retries', self._error(mutate))

    def test_driver_key_wrong_type_is_named(self):
        def mutate(data):
            data['providers'][0]['faults']['create-error'] = 2
        self.assertIn('providers[0].faults.create-error',
                      self._error(mutate))

    def test_undefined_pool_label_is_named(self):
        def mutate(data):
            data['providers'][0]['pools'][0]['labels'][0]['name'] = 'huge'
        error = self._error(mutate)
        self.assertIn('providers[0].pools[0].labels[0].name', error)
        self.assertIn("'huge'", error)

    def test_driver_of_another_type_is_named(self):
        def mutate(data):
            data['providers'][0]['driver'] = ['fake']
        self.assertIn('providers[0].driver: expected str',
                      self._error(mutate))

    def test_unknown_driver_is_named(self):
        def mutate(data):
            data['providers'][0]['driver'] = 'nimbus'
        error = self._error(mutate)
        self.assertIn('providers[0].driver', error)
        self.assertIn("'nimbus'", error)

    def test_all_errors_reported_at_once(self):
        def mutate(data):
            data['providers'][0]['pools'][0]['bogus'] = 1
            data['providers'].append({'name': 'x', 'driver': 'nimbus'})
        error = self._error(mutate)
        self.assertIn('providers[0].pools[0].bogus', error)
        self.assertIn('providers[1].driver', error)

    def test_missing_file_and_bad_yaml(self):
        error = self.assertRaises(exceptions.ConfigError, layout.load,
                                  '/nonexistent/layout.yaml')
        self.assertIn('/nonexistent/layout.yaml', str(error))
        path = self._write('labels: [\n')
        self.assertIn(path, str(self.assertRaises(
            exceptions.ConfigError, layout.load, path)))


CORPUS = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                      'layouts')

#: The keys nodepool 11.0.0's configuration guide lists for the top level,
#: the openstack driver and the static driver (doc/source/configuration.rst,
#: openstack.rst, static.rst), by where they go.
NODEPOOL_KEYS = {
    'top': {'webapp', 'elements-dir', 'images-dir', 'build-log-dir',
            'build-log-retention', 'zookeeper-servers', 'zookeeper-tls',
            'zookeeper-timeout', 'labels', 'max-hold-age', 'diskimages',
            'providers', 'tenant-resource-limits'},
    'webapp': {'port', 'listen_address'},
    'zookeeper-servers': {'host', 'port', 'chroot'},
    'zookeeper-tls': {'cert', 'key', 'ca'},
    'label': {'name', 'max-ready-age', 'min-ready'},
    'openstack': {'name', 'driver', 'max-concurrency', 'priority', 'cloud',
                  'boot-timeout', 'launch-timeout', 'nodepool-id',
                  'launch-retries', 'region-name', 'image-name-format',
                  'post-upload-hook', 'rate', 'clean-floating-ips',
                  'port-cleanup-interval', 'image-upload-timeout',
                  'diskimages', 'cloud-images', 'pools'},
    'cloud-images': {'name', 'config-drive', 'image-id', 'image-name',
                     'username', 'python-path', 'shell-type',
                     'connection-type', 'connection-port'},
    'openstack-pool': {'name', 'priority', 'node-attributes', 'max-cores',
                       'max-servers', 'max-ram', 'max-volumes',
                       'max-volume-gb', 'ignore-provider-quota',
                       'availability-zones', 'networks', 'security-groups',
                       'auto-floating-ip', 'host-key-checking', 'labels'},
    'openstack-label': {'name', 'diskimage', 'cloud-image', 'flavor-name',
                        'min-ram', 'boot-from-volume', 'host-key-checking',
                        'networks', 'key-name', 'console-log',
                        'volume-size', 'instance-properties',
                        'dynamic-instance-properties', 'userdata'},
    'static': {'name', 'driver', 'max-concurrency', 'priority', 'pools'},
    'static-pool': {'name', 'priority', 'node-attributes', 'max-servers',
                    'nodes'},
    'static-node': {'name', 'labels', 'host-key-checking', 'timeout',
                    'connection-type', 'connection-port', 'host-key',
                    'username', 'python-path', 'shell-type',
                    'max-parallel-jobs'},
}

#: each key the unsupported corpus refuses, with the path it is named by
UNSUPPORTED = (
    'elements-dir', 'images-dir', 'build-log-dir', 'build-log-retention',
    'diskimages', 'tenant-resource-limits',
    'providers[0].image-upload-timeout', 'providers[0].image-name-format',
    'providers[0].post-upload-hook', 'providers[0].diskimages',
    'providers[0].pools[0].max-volumes',
    'providers[0].pools[0].max-volume-gb',
    'providers[0].pools[0].labels[0].diskimage',
    'providers[0].pools[0].labels[0].dynamic-instance-properties',
)


def corpus(name):
    return os.path.join(CORPUS, name)


def keys_used(data):
    """The keys of each kind of entry of a nodepool layout."""
    used = collections.defaultdict(set)
    used['top'] = set(data)
    for kind in ('webapp', 'zookeeper-tls'):
        used[kind] = set(data.get(kind, {}))
    for server in data.get('zookeeper-servers', []):
        used['zookeeper-servers'] |= set(server)
    for label in data.get('labels', []):
        used['label'] |= set(label)
    for provider in data.get('providers', []):
        driver = provider.get('driver', 'openstack')
        used[driver] |= set(provider)
        for image in provider.get('cloud-images', []):
            used['cloud-images'] |= set(image)
        for pool in provider.get('pools', []):
            used[driver + '-pool'] |= set(pool)
            for label in pool.get('labels', []):
                used[driver + '-label'] |= set(label)
            for node in pool.get('nodes', []):
                used[driver + '-node'] |= set(node)
    return used


class TestNodepoolCorpus(testtools.TestCase):

    def load_data(self, name):
        with open(corpus(name)) as f:
            return yaml.safe_load(f)

    def test_the_corpus_has_every_key_of_nodepools_guide(self):
        used = collections.defaultdict(set)
        for name in ('nodepool.yaml', 'unsupported.yaml'):
            for kind, keys in keys_used(self.load_data(name)).items():
                used[kind] |= keys
        for kind, keys in NODEPOOL_KEYS.items():
            self.assertEqual(set(), keys - used[kind], kind)

    def test_nodepools_layout_loads_unchanged(self):
        loaded = layout.load(corpus('nodepool.yaml'))
        self.assertEqual({
            'servers': [{'host': 'zk1.example.com', 'port': 2281,
                         'chroot': '/nodepool'},
                        {'host': 'zk2.example.com', 'port': 2281,
                         'chroot': None}],
            'tls': {'ca': '/etc/nodepool/tls/ca.pem',
                    'cert': '/etc/nodepool/tls/client.pem',
                    'key': '/etc/nodepool/tls/client.key'},
            'timeout': 30.0}, loaded.zookeeper)
        self.assertEqual(86400, loaded.max_hold_age)
        cloud = loaded.providers['cloud-a']
        self.assertEqual('openstack', cloud['driver'])
        self.assertEqual((10, 50, 0.5, 5),
                         (cloud['max-concurrency'], cloud['priority'],
                          cloud['rate'], cloud['launch-retries']))
        main = loaded.get_pool('cloud-a', 'main')
        self.assertEqual({'cloud': 'a', 'accelerators': 'none'},
                         main['node-attributes'])
        self.assertEqual(10, main['priority'])
        self.assertEqual(['zuul-ssh', 'default'], main['security-groups'])
        noble = loaded.pool_label(main, 'ubuntu-noble')
        self.assertEqual(
            {'image': 'ubuntu-24.04-cloudimg', 'username': 'zuul',
             'python-path': '/usr/bin/python3', 'shell-type': None,
             'connection-type': 'ssh', 'connection-port': 22,
             'config-drive': True, 'host-key-checking': True,
             'networks': ['ci-net']},
            {key: noble[key] for key in (
                'image', 'username', 'python-path', 'shell-type',
                'connection-type', 'connection-port', 'config-drive',
                'host-key-checking', 'networks')})
        large = loaded.pool_label(main, 'ubuntu-noble-large')
        self.assertEqual((['big-net'], False, 16384),
                         (large['networks'], large['host-key-checking'],
                          large['min-ram']))
        centos = loaded.pool_label(main, 'centos-9-stream')
        self.assertEqual(('0c3fb7f1-0e37-4b2e-8d3f-7c5f6f2a1b9e',
                          'cloud-user', 'sh', 'auto'),
                         (centos['image'], centos['username'],
                          centos['shell-type'], centos['python-path']))
        windows = loaded.pool_label(loaded.get_pool('cloud-a', 'windows'),
                                    'windows-2022')
        self.assertEqual(('winrm', 5986, 'cmd'),
                         (windows['connection-type'],
                          windows['connection-port'],
                          windows['shell-type']))
        self.assertIsNone(loaded.get_pool('cloud-a', 'windows')[
            'node-attributes'])

    def test_static_hosts_give_their_pools_labels(self):
        loaded = layout.load(corpus('nodepool.yaml'))
        rack = loaded.get_pool('lab', 'rack1')
        self.assertEqual(150, rack['priority'])
        switch = loaded.pool_label(rack, 'switch')
        self.assertEqual(('admin', 'network_cli', 2222, 'sh',
                          '/usr/bin/python3', False),
                         tuple(switch[key] for key in (
                             'username', 'connection-type',
                             'connection-port', 'shell-type', 'python-path',
                             'host-key-checking')))
        metal = loaded.pool_label(rack, 'bare-metal')
        self.assertEqual(('ssh', 22, 'auto', True),
                         tuple(metal[key] for key in (
                             'connection-type', 'connection-port',
                             'python-path', 'host-key-checking')))
        # served by the lab's rack (priority 150) after cloud-a's main (10)
        self.assertEqual([('cloud-a', 'main'), ('lab', 'rack1')],
                         [(p['name'], pl['name']) for p, pl in
                          loaded.pools_serving(['centos-9-stream'])])

    def test_each_unsupported_key_has_one_message(self):
        error = str(self.assertRaises(exceptions.ConfigError, layout.load,
                                      corpus('unsupported.yaml')))
        problems = error.split(': ', 1)[1].split('; ')
        for key in UNSUPPORTED:
            said = [p for p in problems if p.startswith(key + ': ')]
            self.assertEqual(1, len(said), '%s in %s' % (key, problems))
            self.assertIn('not supported by fleetflow', said[0])
        for index, driver in ((1, 'gce'), (2, 'kubernetes')):
            self.assertIn("providers[%d].driver: nodepool's %r driver is not "
                          "supported by fleetflow" % (index, driver), problems)
        # nothing but those
        self.assertEqual(len(UNSUPPORTED) + 2, len(problems), problems)


class TestNames(testtools.TestCase):

    def error(self, data):
        return str(self.assertRaises(exceptions.ConfigError, layout.Layout,
                                     data))

    def test_empty_layouts_are_refused(self):
        for data in (None, {}, [], ''):
            self.assertIn('the layout is empty', self.error(data))
        self.assertIn('must be a mapping', self.error(['labels']))

    def test_an_empty_file_is_refused(self):
        fd, path = tempfile.mkstemp(suffix='.yaml')
        os.close(fd)
        self.addCleanup(os.unlink, path)
        error = self.assertRaises(exceptions.ConfigError, layout.load, path)
        self.assertEqual('%s: (top): the layout is empty' % path, str(error))

    def test_duplicate_names_are_refused(self):
        data = yaml.safe_load(EXAMPLE)
        data['labels'].append({'name': 'small', 'min-ready': 5})
        provider = data['providers'][0]
        provider['pools'][0]['labels'].append(
            dict(provider['pools'][0]['labels'][0]))
        provider['pools'].append(dict(provider['pools'][0]))
        data['providers'].append(dict(provider))
        error = self.error(data)
        for where, what in (
                ('labels[1].name', "duplicate label name 'small' (also "
                                   "labels[0])"),
                ('providers[1].name', "duplicate provider name 'fake-1'"),
                ('providers[0].pools[1].name', "duplicate pool name 'main'"),
                ('providers[0].pools[0].labels[1].name',
                 "duplicate pool label name 'small'")):
            self.assertIn('%s: %s' % (where, what), error)

    def test_unsafe_names_are_refused(self):
        for bad in ('../../etc', 'a/b', '.hidden', 'a b', 'key:1', 'x|g',
                    '', 'x' * 129, 'ünicode'):
            data = yaml.safe_load(EXAMPLE)
            data['providers'][0]['name'] = bad
            self.assertIn('providers[0].name: %r is not a safe name' % bad,
                          self.error(data))
        data = yaml.safe_load(EXAMPLE)
        data['labels'][0]['name'] = 'small/../x'
        self.assertIn('labels[0].name', self.error(data))

    def test_static_host_labels_are_names_and_defined(self):
        def static(*nodes):
            return {'labels': [{'name': 'a'}], 'providers': [{
                'name': 'lab', 'driver': 'static', 'pools': [{
                    'name': 'p', 'nodes': list(nodes)}]}]}
        self.assertIn("providers[0].pools[0]: label 'b' is not defined",
                      self.error(static({'name': 'h1', 'labels': 'a b'})))
        self.assertIn("providers[0].pools[0].nodes[0].labels: '../c' is not "
                      "a safe name", self.error(static(
                          {'name': 'h2', 'labels': ['../c']})))


class TestOpenStackLabels(testtools.TestCase):

    def layout_with(self, **label):
        return {'labels': [{'name': 'l'}], 'providers': [{
            'name': 'os', 'cloud': 'c',
            'pools': [{'name': 'p', 'labels': [{'name': 'l', **label}]}]}]}

    def test_an_unknown_key_is_named_as_unknown(self):
        error = str(self.assertRaises(
            exceptions.ConfigError, layout.Layout, self.layout_with(
                **{'cloud-image': 'i', 'flavor-name': 'f', 'flavour': 1})))
        self.assertIn('providers[0].pools[0].labels[0].flavour: extra keys '
                      'not allowed', error)
        self.assertNotIn('is required', error)

    def test_required_keys(self):
        error = str(self.assertRaises(
            exceptions.ConfigError, layout.Layout, self.layout_with()))
        self.assertIn('providers[0].pools[0].labels[0]: flavor-name or '
                      'min-ram is required', error)
        self.assertIn('providers[0].pools[0].labels[0].cloud-image: is '
                      'required', error)

    def test_a_cloud_image_not_listed_is_the_clouds_image_name(self):
        loaded = layout.Layout(self.layout_with(
            **{'cloud-image': 'cirros', 'min-ram': 512}))
        [(_, pool)] = loaded.pools()
        self.assertEqual('cirros', pool['labels'][0]['image'])

    def test_image_id_and_name_exclude_each_other(self):
        data = self.layout_with(**{'cloud-image': 'x', 'min-ram': 1})
        data['providers'][0]['cloud-images'] = [
            {'name': 'x', 'image-id': 'a', 'image-name': 'b'}]
        self.assertIn('providers[0].cloud-images[0]', str(self.assertRaises(
            exceptions.ConfigError, layout.Layout, data)))
