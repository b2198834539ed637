"""The states of a node in the store, and the moves allowed between them.

Every change of a node's state in the store names the states it may move
from (a compare-and-set); :func:`check` refuses, before any query, a move
that this table does not allow. The named sets below are what the
launcher, the client, the ZooKeeper front end and the flows act on.
"""

from fleetflow import exceptions

# The states, as nodepool spells them.
BUILDING = 'building'
READY = 'ready'
IN_USE = 'in-use'
USED = 'used'
HOLD = 'hold'
DELETING = 'deleting'
FAILED = 'failed'
ABORTED = 'aborted'
ALL = (BUILDING, READY, IN_USE, USED, HOLD, DELETING, FAILED, ABORTED)

#: state: the states a node may move to from it. A state listed as its own
#: successor may be set again (with other fields).
TRANSITIONS = {
    # launched (again by a resumed flow); ready, failed, or aborted for
    # quota or capacity (or its provider left the layout)
    BUILDING: {BUILDING, READY, FAILED, ABORTED},
    # given to a request; retired (released, too old, its provider or
    # Node gone, deleted by a user); held
    READY: {IN_USE, USED, HOLD},
    IN_USE: {USED, HOLD},
    # the delete flow starts; a user may still hold it
    USED: {DELETING, HOLD},
    # held again (another reason or expiry); released or expired
    HOLD: {HOLD, USED},
    # a delete that failed is run again
    DELETING: {DELETING},
    FAILED: {DELETING},
    ABORTED: {DELETING},
}

#: the states the launcher starts the delete flow from
TO_DELETE = frozenset({USED, FAILED, ABORTED})
#: the states the delete flow moves to :data:`DELETING` (a failed delete
#: is run again)
DELETE_FLOW = TO_DELETE | {DELETING}
#: the states a launch flow runs in (resumed after it readied the node)
LAUNCH_FLOW = frozenset({BUILDING, READY})
#: the states of a node on its way out: it is deleted, never used again
DOOMED = DELETE_FLOW
#: the states a user (or Zuul) gives a node up from: it becomes used
RETIRABLE = frozenset({READY, IN_USE, HOLD})
#: the states a node is given up from when its user is done with it (a
#: held node is released first)
RELEASABLE = RETIRABLE - {HOLD}
#: the states a user (or Zuul) holds a node in
HOLDABLE = frozenset({READY, IN_USE, USED, HOLD})
#: the states a node reaches only once it was ready: a launch resumed
#: then has nothing left to do
PAST_READY = frozenset({READY, IN_USE, USED, HOLD, DELETING})
#: the states that count towards a label's min-ready while unassigned
SPARE = frozenset({READY, BUILDING})
#: the states of a request's nodes while the request is being served
SERVING = LAUNCH_FLOW


class IllegalTransition(exceptions.FleetflowError):
    """A change of a node's state that :data:`TRANSITIONS` does not allow.

    A bug in fleetflow, not a race: nothing was changed.
    """


def sources(state):
    """The states a node may move to ``state`` from."""
    return sorted(source for source, targets in TRANSITIONS.items()
                  if state in targets)


def check(expected, state):
    """Refuse a move to ``state`` from any of ``expected``.

    :raises IllegalTransition: naming the moves the table does not allow.
    """
    if state not in TRANSITIONS:
        raise IllegalTransition('%r is not a node state' % (state,))
    refused = sorted(source for source in expected
                     if state not in TRANSITIONS.get(source, ()))
    if refused:
        raise IllegalTransition(
            'a node may not move from %s to %s (allowed from: %s)'
            % (', '.join(map(str, refused)), state,
               ', '.join(sources(state)) or 'nowhere'))
