"""A launcher-like process with an aws provider, killed by the crash test.

Run as ``python -m tests.functional.aws_child --state DIR --layout FILE
--node ID`` from the top of the tree, with boto3's environment pointing at
the test's EC2. It resumes every unfinished flow of the state directory's
database, launches node ``ID`` if no run made it yet, waits for the node
to be done, and prints ``done <state> <external id>``.
"""

import argparse
import sys
import time

import yaml

from fleetflow import context
from fleetflow.db import migration
from fleetflow.execution import local
from fleetflow import layout as ff_layout
from fleetflow import node_states
from tests import base

DONE_STATES = (node_states.READY, node_states.FAILED, node_states.ABORTED)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument('--state', required=True)
    parser.add_argument('--layout', required=True)
    parser.add_argument('--node', required=True)
    parser.add_argument('--timeout', type=float, default=60)
    args = parser.parse_args(argv)

    with open(args.layout) as f:
        layout = ff_layout.Layout(yaml.safe_load(f))
    ctx = context.Context(base.make_conf(args.state), layout)
    migration.upgrade(ctx.engine)
    context.set_current(ctx)
    ctx.start()
    runner = local.LocalRunner(ctx, workers=2)
    resumed = runner.resume_all()
    provider = next(iter(layout.providers.values()))
    pool = provider['pools'][0]
    if ctx.store.find_node(args.node) is None:
        node = ctx.store.create_node(pool['labels'][0]['name'],
                                     provider['name'], pool['name'],
                                     id=args.node)
        runner.launch(node)
    print('started %d' % resumed, flush=True)
    deadline = time.monotonic() + args.timeout
    while True:
        node = ctx.store.find_node(args.node)
        if node['state'] in DONE_STATES and not runner.running():
            break
        if time.monotonic() > deadline:
            print('timeout %s' % node['state'], flush=True)
            return 1
        time.sleep(0.05)
    print('done %s %s' % (node['state'], node['external_id']), flush=True)
    runner.stop()
    ctx.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
