"""Flow factories: what a node's launch and delete flows are made of."""

import functools


def shared(build):
    """Build a flow once for each distinct set of settings.

    ``build`` takes only the settings that shape the flow (retries,
    timeouts); a node's own values reach its tasks through the flow's
    store. Every engine that runs the flow shares the one object, and
    the fleetflow engine compiles it once
    (:mod:`fleetflow.execution.taskflow_overrides`).
    """
    return functools.lru_cache(maxsize=64)(build)
