"""Layout reload: a running ``fleetflow-launcher`` process takes changes.

Each test edits the layout file of a running launcher as an operator
would (written aside and renamed over it) and waits for the launcher's log
to say it reloaded, then drives it through the client.
"""

import copy
import os
import signal

import yaml

from tests import base
from tests.functional import test_launcher

RELOADED = 'Layout reloaded from'
KEPT = 'Layout not reloaded; the running one is kept'


class TestReload(test_launcher.LauncherTestCase):

    def start(self, **kwargs):
        """Start the launcher and wait until it runs on its first layout."""
        env = super().start(status=True, **kwargs)
        self.health()
        return env

    def edit(self, change):
        """Apply ``change`` to the layout and write it as an editor does."""
        data = copy.deepcopy(self.env.layout_data)
        change(data)
        self.env.layout_data = data
        self.write(yaml.safe_dump(data))

    def write(self, text):
        tmp = self.env.layout_path + '.new'
        with open(tmp, 'w') as f:
            f.write(text)
        os.replace(tmp, self.env.layout_path)

    def wait_logged(self, text, count=1):
        test_launcher.wait_for(
            lambda: self.launcher.read_log().count(text) >= count,
            message='the launcher did not log %r' % text)

    def request_state(self, labels):
        request = self.client.create_request(labels)
        return self.client.wait_for_request(request['id'], timeout=30)

    def test_a_label_added_is_served_and_kept_ready(self):
        self.start()
        self.assertEqual('failed', self.request_state(['medium'])['state'])

        def add_medium(data):
            data['labels'].append({'name': 'medium', 'min-ready': 2})
            data['providers'][0]['pools'][0]['labels'].append(
                {'name': 'medium'})
        self.edit(add_medium)
        self.wait_logged(RELOADED)
        self.assertIn('label medium added, provider fake-1 changed',
                      self.launcher.read_log())
        test_launcher.wait_for(lambda: len(self.spares('medium')) == 2,
                               message='no 2 medium spares')
        self.fulfilled(['medium'])

    def test_a_lowered_limit_makes_requests_wait(self):
        self.start()
        held = [self.fulfilled(['small']) for _ in range(3)]

        def lower(data):
            data['providers'][0]['pools'][0]['max-servers'] = 3
        self.edit(lower)
        self.wait_logged(RELOADED)
        waiting = self.client.create_request(['small'])
        self.wait_passes(3)
        self.assertEqual('requested',
                         self.client.get_request(waiting['id'])['state'])
        # a node given back makes room under the new limit
        self.client.release_request(held[0]['id'])
        request = self.client.wait_for_request(waiting['id'], timeout=30)
        self.assertEqual('fulfilled', request['state'])

    def test_a_removed_provider_is_drained(self):
        other = base.fake_provider(name='fake-2', labels=('other',),
                                   create_latency=test_launcher.LATENCY)
        data = test_launcher.layout(providers=[other])
        data['labels'].append({'name': 'other', 'min-ready': 1})
        self.start(layout_data=data)
        in_use = self.fulfilled(['other'])
        [node] = self.client.request_nodes(in_use['id'])
        test_launcher.wait_for(lambda: len(self.spares('other')) == 1,
                               message='no spare of fake-2')
        [spare] = self.spares('other')
        cloud = self.driver('fake-2')

        def remove(data):
            data['providers'] = data['providers'][:1]
        self.edit(remove)
        self.wait_logged(RELOADED)
        self.assertIn('provider fake-2 removed', self.launcher.read_log())
        # the spare goes; the node in use stays until it is released
        self.client.wait_node_gone(spare['id'], timeout=30)
        self.assertEqual([], self.spares('other'))
        self.assertEqual('in-use', self.client.get_node(node['id'])['state'])
        self.assertIn(node['id'], self.alive(cloud))
        declined = self.request_state(['other'])
        self.assertEqual('failed', declined['state'])
        self.assertIn('no provider pool serves', declined['reason'])
        self.client.release_request(in_use['id'])
        self.client.wait_node_gone(node['id'], timeout=30)
        test_launcher.wait_for(
            lambda: not {node['id'], spare['id']} & set(self.alive(cloud)),
            message='instances of fake-2 left in the cloud')
        self.fulfilled(['small'])

    def test_an_invalid_layout_is_kept_out(self):
        self.start()

        def typo(data):
            data['providers'][0]['pools'][0]['max-serverz'] = 3
        self.edit(typo)
        self.wait_logged(KEPT)
        expected = ('%s: providers[0].pools[0].max-serverz: extra keys not '
                    'allowed' % self.env.layout_path)
        self.assertIn(expected, self.launcher.read_log())
        # the same words as `fleetflow config validate`
        validate = self.env.cli('config', 'validate')
        self.assertEqual(1, validate.rc)
        self.assertIn(expected, validate.stderr + validate.stdout)
        self.fulfilled(['small'])

        self.write('')
        self.wait_logged(KEPT, count=2)
        self.assertIn('%s: (top): the layout is empty'
                      % self.env.layout_path, self.launcher.read_log())
        self.fulfilled(['large'])
        self.assertNotIn(RELOADED, self.launcher.read_log())

    def test_sighup_reloads(self):
        self.start()
        before = os.stat(self.env.layout_path)
        # the same size and times: only the signal tells the launcher
        with open(self.env.layout_path) as f:
            text = f.read()
        with open(self.env.layout_path, 'w') as f:
            f.write(text.replace('large', 'giant'))
        os.utime(self.env.layout_path,
                 ns=(before.st_atime_ns, before.st_mtime_ns))
        self.wait_passes(3)
        self.assertNotIn(RELOADED, self.launcher.read_log())
        self.launcher.proc.send_signal(signal.SIGHUP)
        self.wait_logged(RELOADED)
        self.fulfilled(['giant'])
