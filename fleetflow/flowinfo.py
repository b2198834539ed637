"""What a node's flows did: their atoms, states, attempts, times, failures.

Every flow of a node has a flow detail in the node's logbook (the
logbook's uuid is the node's id). :func:`describe_flows` reads it back as
plain dicts, for the command line, the status endpoint and tests.

TaskFlow records no times. The runner registers an :class:`AtomTimes`
listener on every engine; it notes in each atom detail's ``meta``:

``started``
    when the atom first started running or reverting (``time.time()``);
``ended``
    when it last finished (succeeded, failed or was reverted; for a
    retry, only when it was reverted: its time is its scope's);
``busy``
    seconds spent in its ``execute`` and ``revert`` calls, summed;
``runs`` / ``reverts``
    how many times its ``execute`` / ``revert`` ran;
``attempts`` and ``failures`` (retries only)
    the length of its history and the failures of its last attempt, noted
    when it is reverted, since TaskFlow empties a reverted retry's history.

The listener only changes the atom details in memory and writes nothing:
what it notes is saved with the atom's next save, or with the flow's last
save when it ends (one statement for all its atoms), so timing costs no
transaction of its own. The notes of a process that crashes before its
next save are lost; the flow's progress is not.
"""

import contextlib
import time

from taskflow import exceptions as tf_exceptions
from taskflow.persistence import models as tf_models
from taskflow import states

from fleetflow.execution import taskflow_overrides
from fleetflow.flows import registry

STARTING = frozenset((states.RUNNING, states.REVERTING))
ENDING = frozenset((states.SUCCESS, states.FAILURE, states.REVERTED,
                    states.REVERT_FAILURE))
WATCHED = tuple(STARTING | ENDING)
#: atoms TaskFlow adds itself (the injector of the flow's store)
INTERNAL_PREFIX = '_TaskFlow_'


def _failure_text(failure):
    if failure is None:
        return None
    return getattr(failure, 'exception_str', None) or str(failure)


class AtomTimes(taskflow_overrides.Listener):
    """Notes times and counts in the atom details' meta; no writes."""

    def __init__(self, engine):
        super().__init__(engine, task_listen_for=WATCHED,
                         retry_listen_for=WATCHED, flow_listen_for=())
        self._began = {}

    def _detail(self, name):
        storage = self.engine.storage
        flow_detail = taskflow_overrides.flow_detail(self.engine)
        if flow_detail is None:
            return None
        try:
            return flow_detail.find(storage.get_atom_uuid(name))
        except tf_exceptions.NotFound:
            return None

    def _note(self, name, state, retry=False):
        detail = self._detail(name)
        if detail is None:
            return
        now = time.time()
        # A new dict, never changed in place: the backend may hold the old
        # one as what it last wrote, and must see the difference.
        meta = dict(detail.meta or {})
        if state in STARTING:
            meta.setdefault('started', now)
            self._began[name] = now
            key = 'runs' if state == states.RUNNING else 'reverts'
            meta[key] = meta.get(key, 0) + 1
            if retry and state == states.REVERTING:
                results = detail.results or []
                meta['attempts'] = max(len(results),
                                       meta.get('attempts', 0))
                if results:
                    meta['failures'] = {
                        atom: _failure_text(failure)
                        for atom, failure in results[-1][1].items()}
        elif retry and state == states.SUCCESS:
            # A retry's execute only decides what its scope does next; the
            # time is in its scope's atoms. Noting its end would cost the
            # flow's last save a statement of its own.
            self._began.pop(name, None)
            return
        else:
            meta['ended'] = now
            began = self._began.pop(name, None)
            if began is not None:
                meta['busy'] = round(meta.get('busy', 0.0) + now - began, 6)
        detail.meta = meta

    def on_task(self, state, details):
        self._note(details['task_name'], state)

    def on_retry(self, state, details):
        self._note(details['retry_name'], state, retry=True)


def _atom(detail, flow_failures):
    meta = detail.meta or {}
    retry = isinstance(detail, tf_models.RetryDetail)
    info = {
        'name': detail.name,
        'flow': None,
        'kind': 'retry' if retry else 'task',
        'state': detail.state,
        'intention': detail.intention,
    }
    started, ended = meta.get('started'), meta.get('ended')
    info['started'] = started
    info['ended'] = ended
    info['duration'] = (round(ended - started, 6)
                        if started is not None and ended is not None
                        and ended >= started else None)
    info['busy'] = meta.get('busy')
    failure = _failure_text(detail.failure) or \
        _failure_text(detail.revert_failure)
    if retry:
        results = detail.results or []
        info['attempts'] = max(len(results), meta.get('attempts', 0))
        info['history'] = [
            {'value': value,
             'failures': {atom: _failure_text(f)
                          for atom, f in failures.items()}}
            for value, failures in results]
        if failure is None and detail.state in (states.REVERTED,
                                                states.REVERTING):
            failure = '; '.join(meta.get('failures', {}).values()) or None
    else:
        ran = detail.state not in (None, states.PENDING)
        info['attempts'] = meta.get('runs', 1 if ran else 0)
    if failure is None and detail.state in (states.REVERTED,
                                            states.REVERTING,
                                            states.REVERT_FAILURE):
        failure = '; '.join(flow_failures) or None
    info['failure'] = failure
    return info


def _structure(flow_detail, node_id):
    """{atom name: names of the flows around it}, in the flow's order.

    The flow is rebuilt by fleetflow's registry of flow factories from the
    inputs recorded in its detail; None when the detail is refused.
    """
    try:
        flow = registry.rebuild(flow_detail, node_id)
    except registry.UntrustedFlow:
        return None
    order = {}

    def walk(item, chain):
        if hasattr(item, 'iter_nodes'):
            chain = chain + (item.name,)
            if item.retry is not None:
                order[item.retry.name] = chain
            for child, _meta in item.iter_nodes():
                walk(child, chain)
        else:
            order[item.name] = chain

    walk(flow, ())
    return order


def _flow(flow_detail, node_id):
    details = [d for d in flow_detail
               if not d.name.startswith(INTERNAL_PREFIX)]
    order = _structure(flow_detail, node_id)
    if order is not None:
        rank = {name: index for index, name in enumerate(order)}
        details.sort(key=lambda d: rank.get(d.name, len(rank)))
    flow_failures = [_failure_text(d.failure) for d in details
                     if d.failure is not None]
    atoms = [_atom(d, flow_failures) for d in details]
    chains = order or {}
    for atom in atoms:
        chain = chains.get(atom['name'], (flow_detail.name,))
        atom['flow'] = chain[-1]
    for atom in atoms:
        if atom['kind'] != 'retry' or atom['started'] is None:
            continue
        # A retry lasts as long as its scope: the atoms of its subflow.
        scope = chains.get(atom['name'], ())
        ends = [a['ended'] for a in atoms
                if a['ended'] is not None
                and chains.get(a['name'], ())[:len(scope)] == scope]
        if ends:
            atom['ended'] = max(ends)
            atom['duration'] = round(max(ends) - atom['started'], 6)
    starts = [a['started'] for a in atoms if a['started'] is not None]
    ends = [a['ended'] for a in atoms if a['ended'] is not None]
    return {
        'uuid': flow_detail.uuid,
        'name': flow_detail.name,
        'state': flow_detail.state,
        'started': min(starts) if starts else None,
        'ended': max(ends) if ends else None,
        'duration': (round(max(ends) - min(starts), 6)
                     if starts and ends else None),
        'atoms': atoms,
    }


def describe_flows(ctx, node_id):
    """The flows recorded for a node, oldest first.

    :returns: a list of dicts with the flow's ``uuid``, ``name``, ``state``,
        ``started``, ``ended``, ``duration`` and ``atoms``; each atom has
        ``name``, ``kind`` (``task`` or ``retry``), ``state``,
        ``intention``, ``flow`` (the name of the (sub)flow that holds it),
        ``attempts`` (a retry's history length; how many
        times a task ran), ``started``, ``ended``, ``duration`` (seconds
        from its first start to its last end, waits included), ``busy``
        (seconds spent in its calls) and ``failure`` (the exception
        string of its own failure or of the one that reverted it). A
        retry also has its ``history``. An empty list when the node has
        no logbook (it never had a flow, or it is deleted).
    """
    with contextlib.closing(ctx.persistence.get_connection()) as conn:
        try:
            book = conn.get_logbook(node_id)
        except tf_exceptions.NotFound:
            return []
    flows = [_flow(fd, book.uuid) for fd in book]
    flows.sort(key=lambda f: (f['started'] is None, f['started'] or 0))
    return flows
