"""Loading and validating the layout file."""

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
