"""The service options and their generated sample."""

import os
import subprocess
import sys
import tempfile

from oslo_config import cfg
import testtools

from fleetflow import conf as ff_conf
from fleetflow.conf import opts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


class TestOptions(testtools.TestCase):

    def _conf(self, *args):
        conf = cfg.ConfigOpts()
        ff_conf.setup(conf, list(args), default_config_files=[])
        return conf

    def test_every_option_has_help(self):
        for group, options in opts.list_opts():
            for opt in options:
                self.assertTrue(opt.help, '%s.%s has no help' % (group,
                                                                 opt.name))

    def test_defaults(self):
        conf = self._conf()
        self.assertIsNone(conf.database.connection)
        self.assertEqual('/etc/fleetflow/layout.yaml',
                         conf.launcher.layout_file)
        self.assertEqual('sqlite:///%s/fleetflow.sqlite' % conf.state_path,
                         ff_conf.database_url(conf))

    def test_config_file_is_read(self):
        with tempfile.NamedTemporaryFile('w', suffix='.conf') as f:
            f.write('[DEFAULT]\nstate_path = /srv/ff\n'
                    '[database]\nconnection = postgresql://u:p@h/db\n'
                    '[launcher]\nlayout_file = /srv/layout.yaml\n')
            f.flush()
            conf = self._conf('--config-file', f.name)
        self.assertEqual('/srv/ff', conf.state_path)
        self.assertEqual('postgresql://u:p@h/db', ff_conf.database_url(conf))
        self.assertEqual('/srv/layout.yaml', conf.launcher.layout_file)

    def test_bounds_are_enforced(self):
        with tempfile.NamedTemporaryFile('w', suffix='.conf') as f:
            f.write('[launcher]\nworkers = 0\n')
            f.flush()
            conf = self._conf('--config-file', f.name)
            self.assertRaises(cfg.ConfigFileValueError,
                              lambda: conf.launcher.workers)

    def test_secrets_are_marked(self):
        self.assertTrue(self._conf()._get_opt_info(
            'connection', 'database')['opt'].secret)
        self.assertTrue(self._conf()._get_opt_info(
            'password', 'jobboard')['opt'].secret)


class TestSample(testtools.TestCase):

    def test_sample_is_current(self):
        sample = os.path.join(ROOT, 'etc', 'fleetflow',
                              'fleetflow.conf.sample')
        with tempfile.TemporaryDirectory() as tmp:
            fresh = os.path.join(tmp, 'sample')
            subprocess.run(
                [sys.executable, '-m', 'oslo_config.generator',
                 '--config-file', os.path.join(
                     ROOT, 'etc', 'fleetflow',
                     'fleetflow-config-generator.conf'),
                 '--output-file', fresh], check=True, cwd=ROOT)
            with open(fresh) as f:
                generated = f.read()
        with open(sample) as f:
            self.assertEqual(generated, f.read(),
                             'etc/fleetflow/fleetflow.conf.sample is stale: '
                             'run "tox -e genconfig"')
