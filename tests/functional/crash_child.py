"""A launcher-like process that the crash test kills and starts again.

Run as ``python -m tests.functional.crash_child --state DIR ...`` from the
top of the tree. It sets up a context on the state directory's database
and the fake cloud's file, resumes every unfinished flow, then drives a
fixed plan of nodes to their end: it creates (at most ``--new-per-run``
per run) and launches the planned nodes, deletes the ready ones that the
plan says to delete (again while a delete fails), and exits 0 once every
node is ready, failed, aborted or deleted.

A node is created with a fixed id (``node_id(i)``) after a marker file is
written, so a run knows which nodes an earlier run created: a marker with
no row is a node deleted (or one whose creation was cut short: it then
never existed, which the test accepts).

``--crash-after create:P,delete:P`` makes the process SIGKILL itself right
after a driver call returns, with probability P: the cloud has done the
call, the flow has not recorded it.

It prints ``started <resumed>`` once its flows are resumed and its plan
is running, and ``done <json summary>`` at the end. With ``--trace FILE``
it appends a line per atom state change (``<flow> <atom> <state>``) and
per crash point, unbuffered, so that what was under way when it was
killed can be read afterwards.
"""

import argparse
import json
import os
import random
import signal
import sys
import time
import uuid

from fleetflow import context
from fleetflow.execution import local
from fleetflow import flowinfo
from fleetflow import layout as ff_layout
from fleetflow import node_states
from tests import base

NAMESPACE = uuid.UUID('5b0c3c1e-6c1e-4c49-9a59-3f6a7f1f0a11')
DONE_STATES = (node_states.READY, node_states.FAILED, node_states.ABORTED)


def node_id(index):
    return str(uuid.uuid5(NAMESPACE, 'node-%d' % index))


def to_delete(index, every):
    return every > 0 and index % every == 0


def parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument('--state', required=True)
    parser.add_argument('--cloud', required=True)
    parser.add_argument('--nodes', type=int, default=20)
    parser.add_argument('--new-per-run', type=int, default=5)
    parser.add_argument('--delete-every', type=int, default=2)
    parser.add_argument('--create-latency', type=float, default=0.3)
    parser.add_argument('--delete-latency', type=float, default=0.3)
    parser.add_argument('--faults', default='{}')
    parser.add_argument('--launch-retries', type=int, default=3)
    parser.add_argument('--launch-timeout', type=float, default=60)
    parser.add_argument('--crash-after', default='')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--workers', type=int, default=8)
    parser.add_argument('--trace')
    return parser.parse_args(argv)


def make_context(args):
    conf = base.make_conf(args.state, delete_timeout=60)
    layout = ff_layout.Layout({
        'labels': [{'name': base.LABEL}],
        'providers': [base.fake_provider(
            cloud_path=args.cloud, create_latency=args.create_latency,
            delete_latency=args.delete_latency,
            faults=json.loads(args.faults), rate_limit_delay=0.2,
            launch_retries=args.launch_retries,
            launch_timeout=args.launch_timeout)]})
    return context.Context(conf, layout)


class Trace:
    """Unbuffered appends of one line each (they survive a SIGKILL)."""

    fd = None

    @classmethod
    def open(cls, path):
        if path:
            cls.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    @classmethod
    def write(cls, line):
        if cls.fd is not None:
            os.write(cls.fd, (line + '\n').encode())


class TracingTimes(flowinfo.AtomTimes):
    """The runner's timing listener, also tracing each state change."""

    def _note(self, name, state, retry=False):
        Trace.write('%s %s %s' % (self._engine.storage.flow_name.split(
            '-')[0], name, state))
        super()._note(name, state, retry=retry)


def add_crash_points(driver, spec, rng):
    """SIGKILL this process right after some driver calls return."""
    for item in filter(None, spec.split(',')):
        call, probability = item.split(':')
        method = {'create': 'create_instance',
                  'delete': 'delete_instance'}[call]
        original = getattr(driver, method)

        def crashing(*args, _original=original, _p=float(probability),
                     **kwargs):
            result = _original(*args, **kwargs)
            if rng.random() < _p:
                Trace.write('crash-after %s' % _original.__name__)
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        setattr(driver, method, crashing)


class Plan:
    def __init__(self, args, ctx, runner):
        self.args = args
        self.ctx = ctx
        self.runner = runner
        self.markers = os.path.join(args.state, 'created')
        os.makedirs(self.markers, exist_ok=True)
        self.created_this_run = 0

    def _marked(self, index):
        return os.path.exists(os.path.join(self.markers, str(index)))

    def step(self):
        """Start what each node needs; return whether all are done."""
        done = True
        for index in range(self.args.nodes):
            ident = node_id(index)
            if self.runner.is_running(ident):
                done = False
                continue
            if not self._marked(index):
                # Nodes beyond this run's share are left to later runs.
                if self.created_this_run < self.args.new_per_run:
                    done = False
                    self.created_this_run += 1
                    open(os.path.join(self.markers, str(index)), 'w').close()
                    node = self.ctx.store.create_node(
                        base.LABEL, base.PROVIDER, base.POOL, id=ident)
                    self.runner.launch(node)
                continue
            node = self.ctx.store.find_node(ident)
            if node is None:
                continue
            state = node['state']
            if state == node_states.READY and \
                    to_delete(index, self.args.delete_every):
                # Given up as a user gives it up, then deleted.
                self.ctx.store.set_node_state(ident, node_states.USED,
                                              expected=[node_states.READY])
                state = node_states.USED
            if state == node_states.BUILDING:
                # Created, but the launch flow was never recorded.
                done = False
                self.runner.launch(node)
            elif state in (node_states.USED, node_states.DELETING):
                done = False
                self.runner.delete(node)
            elif state not in DONE_STATES:
                raise AssertionError('node %s in state %s' % (ident, state))
        return done


def main(argv=None):
    args = parse(argv)
    Trace.open(args.trace)
    Trace.write('--- start')
    flowinfo.AtomTimes = TracingTimes
    rng = random.Random(args.seed)
    ctx = make_context(args)
    context.set_current(ctx)
    driver = ctx.provider(base.PROVIDER).driver
    driver._random.seed(args.seed)
    add_crash_points(driver, args.crash_after, rng)
    ctx.start()
    runner = local.LocalRunner(ctx, workers=args.workers)
    resumed = runner.resume_all()
    plan = Plan(args, ctx, runner)
    plan.step()
    print('started %d' % resumed, flush=True)
    while not plan.step() or runner.running():
        time.sleep(0.05)
    summary = {}
    for index in range(args.nodes):
        node = ctx.store.find_node(node_id(index))
        state = node['state'] if node else 'deleted'
        summary[state] = summary.get(state, 0) + 1
    print('done %s' % json.dumps(summary), flush=True)
    runner.stop()
    ctx.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
