#!/usr/bin/env python3
"""Draw the launch and delete flows, from the code, as Graphviz DOT.

Each flow is built by its factory and compiled by TaskFlow; the DOT is
written from the compiled execution graph: tasks are boxes, retry
controllers diamonds, each subflow a cluster labelled with the retry that
governs it. A dashed edge goes back from the end of a retry's scope to
the retry, which decides on a failure whether the scope runs again. The
launch flow is drawn with host-key-checking on (the keyscan subflow and
save-host-keys are only there then).

    tools/flow_diagrams.py            write doc/flows/{launch,delete}.dot
    tools/flow_diagrams.py --check    exit 1 if those files are stale
    tools/flow_diagrams.py --png      also render PNGs (needs ``dot``)
"""

import argparse
import os
import shutil
import subprocess
import sys

from taskflow import engines
from taskflow import flow as tf_flow
from taskflow import retry as tf_retry

from fleetflow.flows import delete as delete_flows
from fleetflow.flows import launch as launch_flows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'doc', 'flows')

NOOP_KINDS = ('flow', 'flow_end')


def flows():
    """{name: (flow, caption)} of the flows drawn."""
    return {
        'launch': (launch_flows.get_launch_flow(
            '<node>', '<provider>', '<pool>', '<label>',
            launch_retries=3, launch_timeout=3600, boot_timeout=60,
            host_key_checking=True),
            'launch flow (host-key-checking on)'),
        'delete': (delete_flows.get_delete_flow(
            '<node>', '<provider>', delete_timeout=600),
            'delete flow'),
    }


def _quote(text):
    return '"%s"' % str(text).replace('"', '\\"')


def _kind(item):
    return 'retry' if isinstance(item, tf_retry.Retry) else 'task'


def _label(item):
    return '%s\\n%s' % (item.name, type(item).__name__)


def _edges(graph):
    """Edges between atoms, through the flows' no-op start/end nodes.

    :returns: sorted ``(from name, to name, is a retry edge)``
    """
    kinds = {node: data.get('kind') for node, data in graph.nodes(data=True)}
    edges = set()
    for node, kind in kinds.items():
        if kind in NOOP_KINDS:
            continue
        stack = [(succ, graph[node][succ].get('retry', False))
                 for succ in graph.successors(node)]
        while stack:
            succ, retry = stack.pop()
            if kinds[succ] in NOOP_KINDS:
                stack.extend((nxt, retry or graph[succ][nxt].get('retry',
                                                                 False))
                             for nxt in graph.successors(succ))
            else:
                edges.add((node.name, succ.name, bool(retry)))
    return edges


def render(flow, caption):
    """DOT text of one flow."""
    engine = engines.load(flow, store={})
    engine.compile()
    graph = engine.compilation.execution_graph
    order = []
    loops = []
    lines = ['digraph %s {' % _quote(flow.name.split('-')[0]),
             '  label=%s;' % _quote(caption),
             '  labelloc=t;',
             '  fontname="Helvetica";',
             '  node [fontname="Helvetica", fontsize=11];',
             '  edge [fontname="Helvetica", fontsize=9];',
             '  compound=true;']

    def atom(item, indent):
        order.append(item.name)
        shape = 'diamond' if _kind(item) == 'retry' else 'box'
        color = '#e8f0fe' if shape == 'box' else '#fef7e0'
        lines.append('%s%s [shape=%s, style=filled, fillcolor=%s, label=%s];'
                     % (indent, _quote(item.name), shape, _quote(color),
                        _quote(_label(item))))

    def walk(item, depth, root=False):
        if isinstance(item, tf_flow.Flow) and item.retry is not None:
            # Back edge: the last atom of the scope to its retry.
            last = list(item.iter_nodes())[-1][0]
            while isinstance(last, tf_flow.Flow):
                last = list(last.iter_nodes())[-1][0]
            loops.append((last.name, item.retry.name))
        indent = '  ' * (depth + 1)
        if not isinstance(item, tf_flow.Flow):
            atom(item, indent)
            return
        if not root:
            title = item.name
            if item.retry is not None:
                title += ' (retried by %s)' % item.retry.name
            lines.append('%ssubgraph %s {' % (
                indent, _quote('cluster_' + item.name)))
            lines.append('%s  label=%s; style=rounded;'
                         % (indent, _quote(title)))
        if item.retry is not None:
            atom(item.retry, indent + ('  ' if not root else ''))
        for child, _meta in item.iter_nodes():
            walk(child, depth + (0 if root else 1))
        if not root:
            lines.append('%s}' % indent)

    walk(flow, 0, root=True)
    rank = {name: index for index, name in enumerate(order)}
    for source, target, _retry in sorted(
            _edges(graph), key=lambda e: (rank[e[0]], rank[e[1]])):
        lines.append('  %s -> %s;' % (_quote(source), _quote(target)))
    for source, target in loops:
        lines.append('  %s -> %s [style=dashed, constraint=false, '
                     'label="on failure"];' % (_quote(source),
                                               _quote(target)))
    lines.append('}')
    return '\n'.join(lines) + '\n'


def diagrams():
    """{file name: DOT text} of every flow drawn."""
    return {'%s.dot' % name: render(flow, caption)
            for name, (flow, caption) in flows().items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--check', action='store_true',
                        help='exit 1 if the files differ from the code')
    parser.add_argument('--png', action='store_true',
                        help='also render PNG files with Graphviz dot')
    parser.add_argument('--out', default=OUT)
    args = parser.parse_args(argv)
    stale = []
    for name, text in sorted(diagrams().items()):
        path = os.path.join(args.out, name)
        try:
            with open(path) as f:
                current = f.read()
        except OSError:
            current = None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            os.makedirs(args.out, exist_ok=True)
            with open(path, 'w') as f:
                f.write(text)
    if args.check:
        for path in stale:
            print('%s is stale: run tools/flow_diagrams.py' % path)
        return 1 if stale else 0
    if args.png:
        dot = shutil.which('dot')
        if dot is None:
            print('Graphviz dot is not installed; no PNG written')
            return 1
        for name in sorted(diagrams()):
            path = os.path.join(args.out, name)
            subprocess.run([dot, '-Tpng', '-o', path[:-4] + '.png', path],
                           check=True)
    return 0


if __name__ == '__main__':
    sys.path.insert(0, ROOT)
    sys.exit(main())
