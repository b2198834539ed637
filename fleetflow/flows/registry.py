"""The only flows fleetflow rebuilds from its logbooks.

A flow detail records the factory of its flow and the factory's inputs
(TaskFlow's ``factory`` meta: the factory's dotted name and its keyword
arguments), and the same inputs as the flow's store. Whoever can write the
logbook tables can write any name there, and TaskFlow's own helpers that
load a flow from its detail import and call it.
fleetflow never does: it rebuilds a flow only with a factory of
:data:`FACTORIES`, from inputs of the names and types that factory takes,
equal to the flow's store and naming the node whose logbook holds them.
Anything else is refused (:class:`UntrustedFlow`) and logged on the
``fleetflow.security`` logger as a SECURITY event.
"""

import logging
import uuid

from oslo_utils import reflection
from taskflow import engines
from taskflow.persistence import models as tf_models
from taskflow import storage as tf_storage

from fleetflow import exceptions
from fleetflow.flows import delete
from fleetflow.flows import launch
from fleetflow import node_states

SECURITY_LOG = logging.getLogger('fleetflow.security')

#: the longest name of a layout entry (provider, pool, label) a flow
#: may carry
MAX_NAME = 255
#: the longest timeout a flow may carry (seconds), and the most retries
MAX_SECONDS = 7 * 24 * 3600
MAX_RETRIES = 1000


class UntrustedFlow(exceptions.FleetflowError):
    """A flow detail or job that fleetflow refuses to run or rebuild."""


def _node_id(value):
    return isinstance(value, str) and str(uuid.UUID(value)) == value


def _name(value):
    return (isinstance(value, str) and 0 < len(value) <= MAX_NAME
            and value.isprintable())


def _retries(value):
    return (isinstance(value, int) and not isinstance(value, bool)
            and 0 <= value <= MAX_RETRIES)


def _seconds(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 < value <= MAX_SECONDS)


def _flag(value):
    return isinstance(value, bool)


class Factory:
    """A flow factory, the inputs it takes, and the node states it acts on.

    :param kind: the flow's name (a flow detail is ``<kind>-<node id>``).
    :param build: the factory.
    :param inputs: ``{input name: check}``; every input is required.
    :param node_states: the states a node may be in while the flow runs.
    :param starts_from: the states a node may be in for a new flow to be
        recorded (a row read before another flow moved the node on must
        not start one).
    :param inputs_for: ``inputs_for(ctx, node)``: the inputs of the flow
        of a node row, from the node and the layout.
    """

    def __init__(self, kind, build, inputs, node_states, starts_from,
                 inputs_for):
        self.kind = kind
        self.build = build
        self.name = reflection.get_callable_name(build)
        self.inputs = inputs
        self.node_states = frozenset(node_states)
        self.starts_from = frozenset(starts_from)
        self.inputs_for = inputs_for

    def check(self, inputs):
        """Raise :class:`UntrustedFlow` unless the inputs fit the factory."""
        if not isinstance(inputs, dict):
            raise UntrustedFlow('inputs of %s are not a mapping' % self.kind)
        unknown = sorted(set(inputs) - set(self.inputs), key=str)
        missing = sorted(set(self.inputs) - set(inputs))
        if unknown or missing:
            raise UntrustedFlow(
                'inputs of %s: unknown %s, missing %s'
                % (self.kind, unknown or 'none', missing or 'none'))
        for name, check in self.inputs.items():
            try:
                valid = check(inputs[name])
            except (TypeError, ValueError, AttributeError):
                valid = False
            if not valid:
                raise UntrustedFlow('input %s of %s: bad value %.80r'
                                    % (name, self.kind, inputs[name]))


_LAUNCH_INPUTS = {
    'node_id': _node_id, 'provider': _name, 'pool': _name, 'label': _name,
    'launch_retries': _retries, 'launch_timeout': _seconds,
    'boot_timeout': _seconds, 'host_key_checking': _flag,
}
_DELETE_INPUTS = {
    'node_id': _node_id, 'provider': _name, 'delete_timeout': _seconds,
}


def _launch_inputs_for(ctx, node):
    provider = ctx.layout.providers[node['provider']]
    label = ctx.layout.pool_label(
        ctx.layout.get_pool(node['provider'], node['pool']), node['label'])
    return dict(node_id=node['id'], provider=node['provider'],
                pool=node['pool'], label=node['label'],
                launch_retries=provider['launch-retries'],
                launch_timeout=provider['launch-timeout'],
                boot_timeout=provider['boot-timeout'],
                host_key_checking=label['host-key-checking'])


def _delete_inputs_for(ctx, node):
    return dict(node_id=node['id'], provider=node['provider'],
                delete_timeout=ctx.conf.launcher.delete_timeout)


#: the factories fleetflow rebuilds flows from, by their recorded name
FACTORIES = {factory.name: factory for factory in (
    # A launch flow that saved the node ready but not its own end is
    # resumed with the node ready.
    Factory('launch', launch.get_launch_flow, _LAUNCH_INPUTS,
            node_states.LAUNCH_FLOW, {node_states.BUILDING},
            _launch_inputs_for),
    # What the launcher deletes, and the delete flow's own state.
    Factory('delete', delete.get_delete_flow, _DELETE_INPUTS,
            node_states.DELETE_FLOW, node_states.DELETE_FLOW,
            _delete_inputs_for),
)}
#: the same factories by kind (``launch``, ``delete``): what runners start
KINDS = {factory.kind: factory for factory in FACTORIES.values()}


def factory(kind):
    """The registered :class:`Factory` of flows of ``kind``."""
    found = KINDS.get(kind)
    if found is None:
        raise UntrustedFlow('%.80r is not a kind of flow' % (kind,))
    return found


def record(kind, inputs):
    """A new flow of the factory of ``kind``, and its flow detail.

    The detail notes the factory and the inputs that rebuild the flow.

    :returns: ``(flow, flow detail)``
    :raises UntrustedFlow: for a kind not registered or bad inputs;
        nothing is called then.
    """
    chosen = factory(kind)
    chosen.check(inputs)
    flow = chosen.build(**inputs)
    detail = tf_models.FlowDetail('%s-%s' % (chosen.kind,
                                             inputs['node_id']),
                                  uuid=str(uuid.uuid4()))
    engines.save_factory_details(detail, chosen.build, (), inputs)
    return flow, detail


def recorded(detail, node_id):
    """``(factory, inputs)`` of a flow detail of node ``node_id``, checked.

    :raises UntrustedFlow: (logged as a SECURITY event) when the detail
        names a factory that is not registered, inputs that do not fit
        it, inputs that differ from the flow's store, or another node.
    """
    try:
        return _recorded(detail, node_id)
    except UntrustedFlow as e:
        SECURITY_LOG.error('SECURITY: [node %s] flow detail %s (%.80r) '
                           'refused: %s', node_id, detail.uuid, detail.name,
                           e)
        raise


def _recorded(detail, node_id):
    meta = detail.meta if isinstance(detail.meta, dict) else {}
    saved = meta.get('factory')
    if not isinstance(saved, dict):
        raise UntrustedFlow('no factory recorded')
    factory = FACTORIES.get(saved.get('name')) \
        if isinstance(saved.get('name'), str) else None
    if factory is None:
        raise UntrustedFlow('factory %.200r is not a registered flow '
                            'factory' % (saved.get('name'),))
    if saved.get('args'):
        raise UntrustedFlow('positional arguments for %s' % factory.kind)
    inputs = saved.get('kwargs')
    factory.check(inputs)
    if inputs['node_id'] != node_id:
        raise UntrustedFlow('%s inputs name node %s, not the logbook\'s'
                            % (factory.kind, inputs['node_id']))
    if _store(detail) != inputs:
        raise UntrustedFlow('the %s flow\'s store differs from its recorded '
                            'inputs' % factory.kind)
    return factory, inputs


def _store(detail):
    for atom_detail in detail:
        if atom_detail.name == tf_storage.Storage.injector_name:
            return atom_detail.results
    return None


def rebuild(detail, node_id):
    """The flow of a checked flow detail of node ``node_id``.

    :raises UntrustedFlow: as :func:`recorded`.
    """
    factory, inputs = recorded(detail, node_id)
    return factory.build(**inputs)
