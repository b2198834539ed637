"""fleetflow-demo: the whole job on one machine, with nothing else running.

Starts a launcher in this process with the embedded default (the ``local``
driver, whose nodes are real SSH servers on 127.0.0.1, and SQLite), asks
for nodes, shows them launched and keyscanned, runs a command on each over
SSH with the recorded host keys and strict checking, releases them and
shows them deleted.
"""

import argparse
import collections
import getpass
import os
import shutil
import signal
import sys
import time

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives import serialization
from oslo_config import cfg
import paramiko
import yaml

from fleetflow import client as ff_client
from fleetflow import cmd
from fleetflow import conf as ff_conf
from fleetflow import context
from fleetflow.db import migration
from fleetflow.drivers import base as driver_base
from fleetflow import launcher as ff_launcher
from fleetflow import ssh

LABEL = 'demo'


#: the file that marks a state directory as the demo's own
MARK = '.fleetflow-demo'
#: seconds without a change before the demo says what it is waiting for
QUIET = 2.0


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='fleetflow-demo',
                                     description=__doc__.split('\n')[0])
    cmd.add_version_argument(parser)
    parser.add_argument('--nodes', type=int, default=3,
                        help='nodes to request (default 3)')
    parser.add_argument('--state-path', default='fleetflow-demo',
                        help='directory for the demo\'s state; a directory '
                             'an earlier demo made is emptied at start, any '
                             'other must be empty or absent (default '
                             './fleetflow-demo)')
    parser.add_argument('--boot-delay', type=float, default=1.0,
                        help='seconds each node\'s SSH takes to come up')
    parser.add_argument('--timeout', type=float, default=120)
    return parser.parse_args(argv)


def prepare_state(state_path):
    """Make ``state_path`` the demo's, empty; refuse a directory it is not.

    A directory with the demo's mark (an earlier run) is removed whole; an
    empty one is used; anything else is left alone and refused.
    """
    if os.path.isdir(state_path) and os.listdir(state_path):
        if not os.path.exists(os.path.join(state_path, MARK)):
            raise SystemExit(
                'fleetflow-demo: %s is not empty and was not made by '
                'fleetflow-demo; give another --state-path' % state_path)
        shutil.rmtree(state_path)
    os.makedirs(state_path, exist_ok=True)
    with open(os.path.join(state_path, MARK), 'w') as f:
        f.write('state of fleetflow-demo; removed by its next run\n')


def make_key(state_path):
    """A consumer key pair: the private key object and the public line."""
    key = ed25519.Ed25519PrivateKey.generate()
    path = os.path.join(state_path, 'id_ed25519')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'wb') as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.OpenSSH,
                                  serialization.NoEncryption()))
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH,
        serialization.PublicFormat.OpenSSH).decode()
    return paramiko.Ed25519Key.from_private_key_file(path), public


def write_config(state_path, public_key, args):
    layout = {
        'labels': [{'name': LABEL}],
        'providers': [{
            'name': 'local', 'driver': 'local',
            'boot-delay': args.boot_delay,
            'max-instances': max(args.nodes, 1),
            'authorized-keys': [public_key],
            'boot-timeout': 60,
            'pools': [{'name': 'main', 'host-key-checking': True,
                       'labels': [{'name': LABEL,
                                   'username': getpass.getuser()}]}]}]}
    layout_file = os.path.join(state_path, 'layout.yaml')
    with open(layout_file, 'w') as f:
        yaml.safe_dump(layout, f)
    conf = cfg.ConfigOpts()
    ff_conf.setup(conf, [], default_config_files=[])
    conf.set_override('state_path', state_path)
    conf.set_override('layout_file', layout_file, 'launcher')
    conf.set_override('instance_refresh_interval', 0.2, 'launcher')
    conf.set_override('request_interval', 1.0, 'launcher')
    return conf


class Progress:
    """Prints each node's state as it changes."""

    def __init__(self, client, started):
        self.client = client
        self.started = started
        self.seen = {}
        self.changed = time.time()

    def show(self):
        nodes = {n['id']: n for n in self.client.list_nodes()}
        for node_id, node in nodes.items():
            if self.seen.get(node_id) != node['state']:
                if node['state'] == 'in-use' and \
                        self.seen.get(node_id) != 'ready':
                    # Ready and handed over between two looks: show the
                    # step all the same, with the keys it scanned.
                    self.say('node %s  %-9s %s' % (
                        node_id[:8], 'ready', _where(dict(node,
                                                          state='ready'))))
                self.seen[node_id] = node['state']
                self.say('node %s  %-9s %s' % (
                    node_id[:8], node['state'], _where(node)))
        for node_id in set(self.seen) - set(nodes):
            if self.seen[node_id] != 'gone':
                self.seen[node_id] = 'gone'
                self.say('node %s  deleted' % node_id[:8])
        if time.time() - self.changed > QUIET:
            self.say('waiting: %s' % _waiting(nodes.values()))
        return nodes

    def say(self, text):
        self.changed = time.time()
        print('[%5.1fs] %s' % (self.changed - self.started, text),
              flush=True)


def _waiting(nodes):
    """What the nodes are doing, in words."""
    states = collections.Counter(node['state'] for node in nodes)
    if not states:
        return 'the launcher to start the nodes'
    text = ', '.join('%d %s' % (count, state)
                     for state, count in sorted(states.items()))
    if states.get('building'):
        text += (' (each is an SSH server starting on 127.0.0.1; its host '
                 'keys are scanned once it answers)')
    return text


def _where(node):
    if node['state'] == 'ready' and node['host_keys']:
        return '%s:%s, %d host keys scanned' % (
            node['interface_ip'], node['connection_port'],
            len(node['host_keys']))
    return ''


def wait(progress, done, timeout, what):
    deadline = time.time() + timeout
    while True:
        nodes = progress.show()
        if done(nodes):
            return nodes
        if time.time() > deadline:
            raise SystemExit('fleetflow-demo: timed out waiting for %s'
                             % what)
        time.sleep(0.1)


def use_nodes(args, ctx, launcher, pkey, progress):
    """Request the nodes, use each over SSH, release them, see them go."""
    client = ff_client.Client.from_context(ctx)
    progress.client = client
    request = client.create_request([LABEL] * args.nodes,
                                    requestor='fleetflow-demo')
    progress.say('request %s for %d nodes' % (request['id'][:8], args.nodes))
    wait(progress, lambda nodes: client.get_request(
        request['id'])['state'] in ('fulfilled', 'failed'),
        args.timeout, 'the request')
    request = client.get_request(request['id'])
    if request['state'] != 'fulfilled':
        raise SystemExit('fleetflow-demo: request failed: %s'
                         % request['reason'])
    progress.say('request fulfilled; using each node over SSH with '
                 'its recorded host keys (strict checking)')
    for node in client.request_nodes(request['id']):
        status, out, _err = ssh.run_command(
            node['interface_ip'], node['connection_port'],
            node['username'], pkey, node['host_keys'],
            'echo "hello from $(pwd)"', timeout=30)
        progress.say('node %s  ran a command, exit %d: %s'
                     % (node['id'][:8], status, out.decode().strip()))
    client.release_request(request['id'])
    progress.say('request released')
    launcher.wake()
    wait(progress, lambda nodes: not nodes, args.timeout,
         'the nodes to be deleted')


def delete_instances(conf):
    """Delete every instance of the demo's provider; return how many."""
    driver = context.Context(conf).providers['local'].driver
    deleted = 0
    for instance in driver.list_instances():
        try:
            driver.delete_instance(instance.external_id)
            deleted += 1
        except driver_base.NotFound:
            pass
    return deleted


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    state_path = os.path.abspath(args.state_path)
    progress = Progress(None, time.time())
    print('fleetflow demo: %d nodes of label %r from the local driver '
          '(SSH servers on 127.0.0.1); state in %s'
          % (args.nodes, LABEL, state_path), flush=True)
    prepare_state(state_path)
    conf = launcher = None
    try:
        progress.say('writing a consumer key and the layout')
        pkey, public_key = make_key(state_path)
        conf = write_config(state_path, public_key, args)
        ctx = context.Context(conf)
        progress.say('creating the database: %s' % (ctx.engine.url,))
        migration.upgrade(ctx.engine)
        context.set_current(ctx)
        launcher = ff_launcher.Launcher(ctx)
        launcher.start()
        progress.say('launcher started')
        use_nodes(args, ctx, launcher, pkey, progress)
    except KeyboardInterrupt:
        # Clean up whatever a second Ctrl-C would interrupt too.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print('\ninterrupted: stopping the launcher, then deleting the '
              'nodes\' SSH servers', flush=True)
        if launcher is not None:
            launcher.stop()
            launcher = None
        deleted = delete_instances(conf) if conf is not None else 0
        print('fleetflow-demo: interrupted; %d instances deleted, none left'
              % deleted, flush=True)
        return 130
    finally:
        if launcher is not None:
            launcher.stop()
    left = context.Context(conf).providers['local'].driver.list_instances()
    print('done in %.1fs: %d nodes launched, scanned, used and deleted; '
          '%d instances left' % (time.time() - progress.started, args.nodes,
                                 len(left)))
    return 0 if not left else 1


if __name__ == '__main__':
    sys.exit(main())
