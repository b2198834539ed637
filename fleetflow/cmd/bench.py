"""fleetflow-bench: the benchmarks.

``fleetflow-bench launcher [options]`` (the default) measures the real
launcher process; ``fleetflow-bench flows [options]`` measures what
persisting flows costs against TaskFlow's in-memory backend;
``fleetflow-bench soak [options]`` runs launchers under faults for a
while and checks that nothing is lost.
"""

import importlib
import sys

from fleetflow import cmd

BENCHMARKS = {'launcher': 'fleetflow.bench.launcher',
              'flows': 'fleetflow.bench.flows',
              'soak': 'fleetflow.bench.soak'}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['--version']:
        print('fleetflow-bench %s' % cmd.version())
        return 0
    name = argv.pop(0) if argv and argv[0] in BENCHMARKS else 'launcher'
    return importlib.import_module(BENCHMARKS[name]).main(argv)


if __name__ == '__main__':
    sys.exit(main())
