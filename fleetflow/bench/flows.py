"""Benchmark what persisting flows costs.

``fleetflow-bench flows`` runs M launch flows and then M delete flows
through the runner on the fake cloud (no latency, no keyscan), once with
the ``memory`` persistence backend and once with ``sql`` (the SQLite file
of the node store), in one process, and reports each run's CPU seconds
(every thread of the process) and wall time, and the ratios sql/memory.
The node store and the fake cloud are SQLite files in both runs: the
difference is what recording the flows in the logbook costs.

Each backend first runs a small warm-up batch (not measured), so that
imports and first compilations are paid by neither. ``--profile sql``
profiles the flow workers (cProfile) in that backend's measured run and
prints where the time went.
"""

import argparse
import cProfile
import io
import json
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time

from oslo_config import cfg
from taskflow.persistence.backends import impl_sqlalchemy

from fleetflow import cmd
from fleetflow import conf as ff_conf
from fleetflow import context
from fleetflow.db import migration
from fleetflow.execution import local
from fleetflow.execution import taskflow_overrides
from fleetflow import layout as ff_layout
from fleetflow import node_states

BACKENDS = ('memory', 'sql')
#: also measurable: TaskFlow's own SQL connection, one object reused
EXTRA_BACKENDS = ('sql-stock',)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='fleetflow-bench flows', description=__doc__.split('\n')[0])
    cmd.add_version_argument(parser)
    parser.add_argument('-n', '--flows', type=int, default=200,
                        help='nodes launched and then deleted per run')
    parser.add_argument('--workers', type=int, default=8,
                        help='runner worker threads')
    parser.add_argument('--at-once', type=int,
                        help='launch and delete the nodes this many at a '
                             'time (default: all at once); 1 measures what '
                             'a node costs alone')
    parser.add_argument('--warmup', type=int, default=20,
                        help='nodes of the unmeasured warm-up batch')
    parser.add_argument('--repeat', type=int, default=1,
                        help='measured runs per backend (the median is '
                             'reported)')
    parser.add_argument('--refresh-interval', type=float, default=0.01,
                        help='seconds between instance listings')
    parser.add_argument('--backends', default=','.join(BACKENDS),
                        help='comma-separated, from %s (memory and sql '
                             'are always run); sql-stock is TaskFlow\'s '
                             'own SQL connection, for comparison'
                        % ', '.join(BACKENDS + EXTRA_BACKENDS))
    parser.add_argument('--profile', choices=BACKENDS + EXTRA_BACKENDS,
                        help='profile the flow workers of this backend')
    parser.add_argument('--profile-lines', type=int, default=40)
    parser.add_argument('--json', action='store_true',
                        help='print only the JSON result')
    parser.add_argument('--timeout', type=float, default=600)
    return parser.parse_args(argv)


class _Profiler:
    """cProfile in every runner worker, merged at the end."""

    def __init__(self):
        self._local = threading.local()
        self._profiles = []
        self._lock = threading.Lock()

    def wrap(self, run):
        def profiled(flow_run):
            profile = getattr(self._local, 'profile', None)
            if profile is None:
                profile = self._local.profile = cProfile.Profile()
                with self._lock:
                    self._profiles.append(profile)
            profile.enable()
            try:
                return run(flow_run)
            finally:
                profile.disable()
        return profiled

    def report(self, lines):
        out = io.StringIO()
        with self._lock:
            profiles = list(self._profiles)
        if not profiles:
            return ''
        stats = pstats.Stats(profiles[0], stream=out)
        for profile in profiles[1:]:
            stats.add(profile)
        stats.sort_stats('cumulative').print_stats(lines)
        stats.sort_stats('tottime').print_stats(lines)
        return out.getvalue()


class _StockBackend(impl_sqlalchemy.SQLAlchemyBackend):
    """TaskFlow's SQL backend on fleetflow's engine, one connection."""

    def __init__(self, engine):
        super().__init__({'connection': engine.url.render_as_string(
            hide_password=False)}, engine=engine)
        self._connection = impl_sqlalchemy.Connection(
            self, taskflow_overrides.upgrade_lock(self))

    def get_connection(self):
        return self._connection


class Fleet:
    """A context and runner on a fresh state directory."""

    def __init__(self, backend, workers, refresh_interval):
        self.state = tempfile.mkdtemp(prefix='fleetflow-bench-flows-')
        conf = cfg.ConfigOpts()
        ff_conf.setup(conf, [], default_config_files=[])
        conf.set_override('state_path', self.state)
        conf.set_override('backend', 'sql' if backend == 'sql-stock'
                          else backend, 'persistence')
        conf.set_override('instance_refresh_interval', refresh_interval,
                          'launcher')
        conf.set_override('poll_attempt', 0.5, 'launcher')
        layout = ff_layout.Layout({
            'labels': [{'name': 'small'}],
            'providers': [{
                'name': 'fake-1', 'driver': 'fake',
                'create-latency': 0, 'delete-latency': 0,
                'pools': [{'name': 'main', 'host-key-checking': False,
                           'labels': [{'name': 'small'}]}]}]})
        self.ctx = context.Context(conf, layout)
        if backend == 'sql-stock':
            self.ctx.persistence = _StockBackend(self.ctx.engine)
        migration.upgrade(self.ctx.engine)
        context.set_current(self.ctx)
        self.ctx.start()
        self.runner = local.LocalRunner(self.ctx, workers=workers)
        # CPU of the flow workers alone: the engines, the tasks and the
        # persistence they pay for, not the listing and timer threads.
        self.flow_cpu = 0.0
        self._cpu_lock = threading.Lock()
        run = self.runner._run

        def timed(flow_run):
            began = time.thread_time()
            try:
                return run(flow_run)
            finally:
                spent = time.thread_time() - began
                with self._cpu_lock:
                    self.flow_cpu += spent

        self.runner._run = timed

    def close(self):
        self.runner.stop()
        self.ctx.stop()
        shutil.rmtree(self.state, ignore_errors=True)

    def _wait(self, runs, timeout):
        deadline = time.time() + timeout
        for run in runs:
            if not run.done.wait(max(0, deadline - time.time())):
                raise RuntimeError('flows not done after %ss' % timeout)

    def batch(self, count, timeout, at_once=None):
        """Launch ``count`` nodes, then delete them; measure it.

        ``at_once`` nodes at a time (all of them by default): each group is
        launched, then deleted, before the next.
        """
        store = self.ctx.store
        nodes = [store.create_node('small', 'fake-1', 'main')
                 for _ in range(count)]
        statements, transactions = store.statements, store.transactions
        flow_cpu = self.flow_cpu
        cpu, start = time.process_time(), time.perf_counter()
        launching = 0.0
        ready = deletes = 0
        step = at_once or count
        for first in range(0, count, step):
            began = time.perf_counter()
            self._wait([self.runner.launch(node)
                        for node in nodes[first:first + step]], timeout)
            launching += time.perf_counter() - began
            group = store.list_nodes(states=[node_states.READY])
            ready += len(group)
            # Given up as the launcher gives up a spare, then deleted.
            for node in group:
                store.retire_spare(node['id'])
            self._wait([self.runner.delete(node) for node in group], timeout)
            deletes += len(group)
        cpu, end = time.process_time() - cpu, time.perf_counter()
        left = store.list_nodes()
        return {
            'flows': count + deletes,
            'cpu_s': round(cpu, 3),
            'flow_cpu_s': round(self.flow_cpu - flow_cpu, 3),
            'wall_s': round(end - start, 3),
            'launch_wall_s': round(launching, 3),
            'not_ready': count - ready,
            'left': len(left),
            'statements': store.statements - statements,
            'transactions': store.transactions - transactions,
        }


def run_backend(backend, args, profiler=None):
    fleet = Fleet(backend, args.workers, args.refresh_interval)
    timed = fleet.runner._run
    try:
        if args.warmup:
            fleet.batch(args.warmup, args.timeout)
        results = []
        for _ in range(args.repeat):
            if profiler is not None:
                fleet.runner._run = profiler.wrap(timed)
            results.append(fleet.batch(args.flows, args.timeout,
                                       args.at_once))
            fleet.runner._run = timed
    finally:
        fleet.close()
    result = dict(results[0])
    for key in ('cpu_s', 'flow_cpu_s', 'wall_s'):
        result[key] = statistics.median(r[key] for r in results)
    nodes = args.flows
    result['cpu_ms_per_node'] = round(1000 * result['cpu_s'] / nodes, 3)
    result['flow_cpu_ms_per_node'] = round(
        1000 * result['flow_cpu_s'] / nodes, 3)
    result['statements_per_node'] = round(result['statements'] / nodes, 1)
    return result


def table(report):
    rows = [('backend', 'cpu s', 'wall s', 'cpu ms/node',
             'flow cpu ms/node', 'stmts/node', 'txns/node')]
    nodes = report['nodes']
    for backend in report['backends']:
        r = report[backend]
        rows.append((backend, '%.3f' % r['cpu_s'], '%.3f' % r['wall_s'],
                     '%.2f' % r['cpu_ms_per_node'],
                     '%.2f' % r['flow_cpu_ms_per_node'],
                     '%.1f' % r['statements_per_node'],
                     '%.1f' % (r['transactions'] / nodes)))
    rows.append(('sql/memory', '%.2f' % report['ratio_cpu'],
                 '%.2f' % report['ratio_wall'],
                 '', '%.2f' % report['ratio_flow_cpu'], '', ''))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return '\n'.join('  '.join(cell.rjust(w) if i else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row,
                                                                 widths)))
                     for row in rows)


def main(argv=None):
    args = parse_args(argv)
    profiler = _Profiler() if args.profile else None
    backends = list(BACKENDS) + [
        b for b in args.backends.split(',')
        if b in EXTRA_BACKENDS]
    report = {'nodes': args.flows, 'workers': args.workers,
              'at_once': args.at_once or args.flows,
              'repeat': args.repeat, 'backends': backends}
    for backend in backends:
        report[backend] = run_backend(
            backend, args, profiler if args.profile == backend else None)
    report['ratio_cpu'] = round(report['sql']['cpu_s']
                                / report['memory']['cpu_s'], 3)
    report['ratio_wall'] = round(report['sql']['wall_s']
                                 / report['memory']['wall_s'], 3)
    report['ratio_flow_cpu'] = round(report['sql']['flow_cpu_s']
                                     / report['memory']['flow_cpu_s'], 3)
    for backend in backends[2:]:
        report['ratio_cpu_%s' % backend] = round(
            report[backend]['cpu_s'] / report['memory']['cpu_s'], 3)
    print(json.dumps(report, sort_keys=True))
    if not args.json:
        print(table(report))
    if profiler is not None:
        sys.stderr.write(profiler.report(args.profile_lines))
    bad = any(report[b]['not_ready'] or report[b]['left'] for b in backends)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
