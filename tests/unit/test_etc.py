"""The example /etc/fleetflow tree and the systemd unit under etc/."""

import configparser
import os

import testtools

from fleetflow.cmd import common
from fleetflow import layout

ROOT = os.path.join(os.path.dirname(__file__), '..', '..')
ETC = os.path.join(ROOT, 'etc')
WALK = os.path.join(ROOT, 'doc', 'source', 'admin', 'walkthrough')


class TestExampleTree(testtools.TestCase):

    def test_config_is_valid_and_names_the_layout(self):
        path = os.path.join(ETC, 'fleetflow', 'fleetflow.conf')
        conf = common.read_config(['--config-file', path], 'test',
                                  default_config_files=[])
        self.assertEqual([], common.unknown_options(conf))
        self.assertEqual('/etc/fleetflow/layout.yaml',
                         conf.launcher.layout_file)

    def test_layout_is_valid(self):
        loaded = layout.load(os.path.join(ETC, 'fleetflow', 'layout.yaml'))
        self.assertEqual(['cloud-a'], list(loaded.providers))

    def test_walkthrough_files_are_valid(self):
        conf = common.read_config(
            ['--config-file', os.path.join(WALK, 'fleetflow.conf')], 'test',
            default_config_files=[])
        self.assertEqual([], common.unknown_options(conf))
        self.assertEqual('layout.yaml', conf.launcher.layout_file)
        loaded = layout.load(os.path.join(WALK, 'layout.yaml'))
        # The walk-through requests both labels from the one pool.
        pool, = loaded.providers['fake-1']['pools']
        self.assertEqual(['small', 'large'],
                         [label['name'] for label in pool['labels']])
        self.assertEqual(1, loaded.labels['small']['min-ready'])

    def test_systemd_unit_runs_the_launcher_on_that_config(self):
        unit = configparser.ConfigParser(interpolation=None)
        unit.read(os.path.join(ETC, 'systemd', 'fleetflow-launcher.service'))
        command = unit['Service']['ExecStart'].split()
        self.assertTrue(command[0].endswith('/fleetflow-launcher'))
        self.assertEqual(['--config-file', '/etc/fleetflow/fleetflow.conf'],
                         command[1:])
        self.assertEqual('SIGTERM', unit['Service']['KillSignal'])
        self.assertEqual('/bin/kill -HUP $MAINPID',
                         unit['Service']['ExecReload'])
        self.assertEqual('multi-user.target', unit['Install']['WantedBy'])
