"""tools/test-servers and tools/genconfig fail honestly."""

import os
import shutil
import subprocess
import sys

import fixtures
import testtools

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class TestTestServers(testtools.TestCase):

    def test_fails_naming_what_is_not_installed(self):
        nothing = self.useFixture(fixtures.TempDir()).path
        proc = subprocess.run(
            ['/bin/bash', os.path.join(ROOT, 'tools', 'test-servers')],
            env={'PATH': nothing, 'ZOOKEEPER_HOME': nothing},
            capture_output=True, text=True, timeout=60)
        self.assertEqual(1, proc.returncode, proc)
        self.assertEqual('', proc.stdout)
        self.assertEqual(
            'test-servers: not installed: PostgreSQL (postgresql), Redis '
            '(redis-server), ZooKeeper (zookeeperd); as root: apt-get '
            'install postgresql redis-server zookeeperd\n', proc.stderr)


class TestGenconfig(testtools.TestCase):

    def run_genconfig(self, tree):
        env = dict(os.environ, PATH=os.pathsep.join(
            [os.path.dirname(sys.executable), os.environ.get('PATH', '')]))
        return subprocess.run([os.path.join(tree, 'tools', 'genconfig')],
                              env=env, capture_output=True, text=True,
                              timeout=120)

    def test_stale_sample_fails_and_is_regenerated(self):
        tree = self.useFixture(fixtures.TempDir()).path
        for part in ('tools', 'etc'):
            shutil.copytree(os.path.join(ROOT, part),
                            os.path.join(tree, part))
        sample = os.path.join(tree, 'etc', 'fleetflow',
                              'fleetflow.conf.sample')
        with open(sample) as f:
            current = f.read()
        with open(sample, 'a') as f:
            f.write('#stale_option = 1\n')
        stale = self.run_genconfig(tree)
        self.assertEqual(1, stale.returncode, stale)
        self.assertIn('fleetflow.conf.sample was stale', stale.stderr)
        with open(sample) as f:
            self.assertEqual(current, f.read())
        again = self.run_genconfig(tree)
        self.assertEqual(0, again.returncode, again)
