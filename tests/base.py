"""Fixtures that tests of flows, the runner and the launcher share.

:class:`FleetflowFixture` builds, in a temporary state directory, what a
process that runs flows has: oslo.config options (``fleetflow.conf.setup``,
no config file read), a layout with one ``fake`` provider, a migrated
SQLite database, a started :class:`~fleetflow.context.Context` set as the
current one, and a :class:`~fleetflow.execution.local.LocalRunner`.
Everything is stopped and the previous current context restored on
cleanup. Typical use::

    class TestSomething(base.TestCase):
        def test_launch(self):
            ff = self.useFixture(base.FleetflowFixture(create_latency=0.2))
            node, run = ff.launch()
            self.assertEqual('SUCCESS', run.state)
            self.assertEqual('ready', ff.node(node['id'])['state'])

The fake provider is ``fake-1`` with pool ``main`` serving label ``small``.
Pass ``layout`` (a whole layout dict) for anything else; the fixture then
only fills in the fake cloud's ``state-path`` of each fake provider that
has none. ``refresh_interval`` (the instance cache's listing interval) and
``poll_attempt`` are small by default so that waiting flows wake fast.

The fake cloud is a SQLite file (``cloud_path``) that a test process and a
launcher child process can share; :meth:`FleetflowFixture.script_faults`
makes the next fault checks of a kind come out as the test says instead
of at random.
"""

import logging
import os
import time

import fixtures
from oslo_config import cfg
import testtools

from fleetflow import conf as ff_conf
from fleetflow import context
from fleetflow.db import api as db_api
from fleetflow.db import migration
from fleetflow.execution import local
from fleetflow import layout as ff_layout
from fleetflow import node_states

PROVIDER = 'fake-1'
POOL = 'main'
LABEL = 'small'


def make_conf(state_path, db_url=None, persistence='sql',
              refresh_interval=0.05, poll_attempt=0.2, delete_timeout=30,
              overrides=None):
    """A ConfigOpts with fleetflow's options, parsed from no file.

    :param overrides: ``{(group, name): value}``; group None is DEFAULT.
    """
    conf = cfg.ConfigOpts()
    ff_conf.setup(conf, [], default_config_files=[])
    conf.set_override('state_path', state_path)
    conf.set_override('host', 'test-host')
    if db_url:
        conf.set_override('connection', db_url, 'database')
    else:
        # An override outlives its ConfigOpts (the option objects are
        # shared): an earlier test's database must not be this one's.
        conf.clear_override('connection', 'database')
    conf.set_override('backend', persistence, 'persistence')
    conf.set_override('instance_refresh_interval', refresh_interval,
                      'launcher')
    conf.set_override('poll_attempt', poll_attempt, 'launcher')
    conf.set_override('delete_timeout', delete_timeout, 'launcher')
    # Flows run in the test's own process unless a test asks otherwise.
    conf.set_override('flow_processes', 1, 'launcher')
    for (group, name), value in (overrides or {}).items():
        conf.set_override(name, value, group)
    return conf


def fake_provider(name=PROVIDER, pool=POOL, labels=(LABEL,),
                  cloud_path=None, create_latency=0, delete_latency=0,
                  faults=None, quota=None, rate_limit_delay=None,
                  host_key_checking=False, launch_retries=3,
                  launch_timeout=60, boot_timeout=10, interface_ip=None,
                  connection_port=None):
    """A layout entry of a ``fake`` provider with one pool."""
    entry = {
        'name': name, 'driver': 'fake',
        'create-latency': create_latency, 'delete-latency': delete_latency,
        'launch-retries': launch_retries, 'launch-timeout': launch_timeout,
        'boot-timeout': boot_timeout,
        'pools': [{'name': pool, 'host-key-checking': host_key_checking,
                   'labels': [{'name': label} for label in labels]}],
    }
    optional = {'state-path': cloud_path, 'faults': faults, 'quota': quota,
                'rate-limit-delay': rate_limit_delay,
                'interface-ip': interface_ip,
                'connection-port': connection_port}
    entry.update({k: v for k, v in optional.items() if v is not None})
    return entry


def force_node_state(store, node_id, state, **fields):
    """Set a node's state whatever it is, as no code of fleetflow may.

    For tests that play a bug (a node handed out twice) or need a state no
    flow leads to from where the node is.
    """
    store._write(db_api.NODES.update().where(db_api.NODES.c.id == node_id)
                 .values(state=state, **fields))


def listed(driver, external_id):
    """The instance ``external_id`` as ``driver`` lists it, or None."""
    return next((instance for instance in driver.list_instances()
                 if instance.external_id == external_id), None)


class FleetflowFixture(fixtures.Fixture):
    """A started context and runner on a fake cloud, in a temp directory.

    Provider parameters (ignored when ``layout`` is given):

    :param create_latency: seconds an instance stays BUILDING.
    :param delete_latency: seconds a deleted instance takes to go.
    :param faults: ``{kind: rate}`` with kinds of
        :data:`fleetflow.drivers.fake.FAULTS`.
    :param quota: ``{'instances': n, 'cores': n, 'ram': n}``.
    :param rate_limit_delay: seconds a rate-limited call must wait.
    :param host_key_checking: whether launches scan SSH host keys.
    :param launch_retries: launch attempts per node.
    :param launch_timeout: seconds an instance may take to be active.
    :param boot_timeout: seconds SSH may take to answer.
    :param interface_ip: the address the fake gives active instances.
    :param connection_port: the SSH port the fake gives them.

    Process parameters:

    :param layout: a whole layout dict instead of the one-provider one.
    :param state_path: the state directory (default: a new temp dir).
    :param cloud_path: the fake cloud's SQLite file (default: in
        ``state_path``).
    :param db_url: the database URL (default: SQLite in ``state_path``).
    :param persistence: ``sql`` or ``memory``.
    :param workers: the runner's worker threads.
    :param refresh_interval: ``[launcher] instance_refresh_interval``.
    :param poll_attempt: ``[launcher] poll_attempt``.
    :param delete_timeout: ``[launcher] delete_timeout``.
    :param conf_overrides: more options, ``{(group, name): value}``.
    :param start: start the context (its drivers and scheduler).
    :param runner: make a runner (``self.runner``); stopped on cleanup.
    """

    def __init__(self, create_latency=0, delete_latency=0, faults=None,
                 quota=None, rate_limit_delay=None, host_key_checking=False,
                 launch_retries=3, launch_timeout=60, boot_timeout=10,
                 interface_ip=None, connection_port=None, layout=None,
                 state_path=None, cloud_path=None, db_url=None,
                 persistence='sql', workers=8, refresh_interval=0.05,
                 poll_attempt=0.2, delete_timeout=30, conf_overrides=None,
                 start=True, runner=True):
        super().__init__()
        self.provider_args = dict(
            create_latency=create_latency, delete_latency=delete_latency,
            faults=faults, quota=quota, rate_limit_delay=rate_limit_delay,
            host_key_checking=host_key_checking,
            launch_retries=launch_retries, launch_timeout=launch_timeout,
            boot_timeout=boot_timeout, interface_ip=interface_ip,
            connection_port=connection_port)
        self.layout_data = layout
        self.state_path = state_path
        self.cloud_path = cloud_path
        self.db_url = db_url
        self.persistence = persistence
        self.workers = workers
        self.conf_args = dict(refresh_interval=refresh_interval,
                              poll_attempt=poll_attempt,
                              delete_timeout=delete_timeout,
                              overrides=conf_overrides)
        self.start = start
        self.make_runner = runner
        self.runner = None

    def _setUp(self):
        if self.state_path is None:
            self.state_path = self.useFixture(fixtures.TempDir()).path
        if self.cloud_path is None:
            self.cloud_path = os.path.join(self.state_path,
                                           'fake-cloud.sqlite')
        self.conf = make_conf(self.state_path, db_url=self.db_url,
                              persistence=self.persistence,
                              **self.conf_args)
        if self.layout_data is None:
            self.layout_data = {
                'labels': [{'name': LABEL}],
                'providers': [fake_provider(cloud_path=self.cloud_path,
                                            **self.provider_args)]}
        for provider in self.layout_data.get('providers', []):
            if provider.get('driver') == 'fake':
                provider.setdefault('state-path', self.cloud_path)
        self.layout = ff_layout.Layout(self.layout_data)
        self.ctx = context.Context(self.conf, self.layout)
        self.addCleanup(self.ctx.stop)
        migration.upgrade(self.ctx.engine)
        previous = context._current
        context.set_current(self.ctx)
        self.addCleanup(context.set_current, previous)
        if self.start:
            self.ctx.start()
        if self.make_runner:
            self.runner = local.LocalRunner(self.ctx, workers=self.workers)
            self.addCleanup(self.runner.stop)

    # Shortcuts

    @property
    def store(self):
        return self.ctx.store

    @property
    def provider(self):
        """The first provider of the layout."""
        return next(iter(self.ctx.providers.values()))

    @property
    def driver(self):
        return self.provider.driver

    def node(self, node_id):
        """The node row, or None when it is gone."""
        return self.store.find_node(node_id)

    def create_node(self, label=LABEL, provider=None, pool=POOL, **fields):
        return self.store.create_node(label, provider or self.provider.name,
                                      pool, **fields)

    def instances(self, provider=None):
        """The instances the cloud lists now (deleting ones included)."""
        return self.ctx.provider(provider or self.provider.name) \
            .driver.list_instances()

    # Running flows

    def wait_run(self, run, timeout=20):
        """Wait until ``run`` is done; fail the test when it takes longer."""
        if not run.done.wait(timeout):
            raise AssertionError('flow %s of node %s not done after %ss'
                                 % (run.name, run.node_id, timeout))
        return run

    def launch(self, node=None, timeout=20, **fields):
        """Create a node (unless given), run its launch flow, wait.

        :returns: ``(node row after the flow, FlowRun)``
        """
        if node is None:
            node = self.create_node(**fields)
        run = self.wait_run(self.runner.launch(node), timeout)
        return self.node(node['id']) or node, run

    def launch_many(self, count, timeout=20):
        """Create ``count`` nodes, start all their launches, wait for all.

        :returns: ``(nodes as created, FlowRuns)``
        """
        nodes = [self.create_node() for _ in range(count)]
        runs = [self.runner.launch(node) for node in nodes]
        for run in runs:
            self.wait_run(run, timeout)
        return nodes, runs

    def delete(self, node, timeout=20):
        """Run the node's delete flow and wait; return the FlowRun.

        A node in use or ready is given up first (it becomes used), as a
        user or the launcher does before the launcher deletes it.
        """
        if node['state'] in node_states.RELEASABLE:
            self.store.set_node_state(node['id'], node_states.USED,
                                      expected=node_states.RELEASABLE)
        return self.wait_run(self.runner.delete(node), timeout)

    def force_state(self, node_id, state, **fields):
        """:func:`force_node_state` in this fixture's store."""
        force_node_state(self.store, node_id, state, **fields)

    @staticmethod
    def wait_for(predicate, timeout=10, interval=0.02, message=None):
        """Poll ``predicate()`` until it is true; return its value."""
        deadline = time.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.time() >= deadline:
                raise AssertionError(message or 'condition not met after '
                                     '%ss: %r' % (timeout, predicate))
            time.sleep(interval)

    # Faults

    def script_faults(self, kind, outcomes, provider=None):
        """Decide the next checks of fault ``kind`` in order.

        ``outcomes`` is a list of booleans, one per check of that kind
        (True injects the fault), made in any process on the fake cloud;
        once it is used up, the configured rate decides again.
        """
        driver = self.ctx.provider(provider or self.provider.name).driver
        driver.script_faults(kind, outcomes)


class TestCase(testtools.TestCase):
    """Base test case: a timeout, and the log captured (INFO and up)."""

    TIMEOUT = 60

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(self.TIMEOUT, gentle=True))
        # oslo.log puts a stderr handler on the root logger; keep test
        # output quiet and attach the log to the result of the test.
        self.logger = self.useFixture(fixtures.FakeLogger(
            level=logging.INFO,
            format='%(asctime)s %(threadName)s %(name)s %(levelname)s '
                   '%(message)s'))
