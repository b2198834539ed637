"""Options for oslo-config-generator (namespace ``fleetflow``)."""

import collections

from fleetflow import conf


def list_opts():
    merged = collections.defaultdict(list)
    for module in conf.MODULES:
        for group, opts in module.list_opts().items():
            merged[group].extend(opts)
    return [(group, opts) for group, opts in merged.items()]
