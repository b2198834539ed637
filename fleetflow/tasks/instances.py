"""Tasks that act on the cloud through a provider's driver."""

import time

from taskflow.types import failure as tf_failure

from fleetflow.drivers import base as driver_base
from fleetflow import exceptions
from fleetflow import instance_cache
from fleetflow import node_states
from fleetflow.tasks import base


def _look(ctx, provider, external_id, not_before, settled):
    """The instance's latest listing: ``(known, instance)``.

    When it is not settled yet and no flow waits for a worker, wait here
    for the next listing that shows a change, for two refresh intervals at
    most: on a quick cloud most instances change within that time, and the
    flow need not be parked and resumed. With a backlog, the worker is
    worth more to the next flow, and this one is parked at once.
    """
    cache = ctx.provider(provider).cache
    known, current = cache.lookup(external_id, not_before)
    if not settled(known, current) and not ctx.worker_backlog:
        seen = instance_cache.state_of(current) if known else None
        cache.wait_change(external_id, seen, min(
            2 * cache.interval, ctx.conf.launcher.poll_attempt))
        known, current = cache.lookup(external_id, not_before)
    return known, current


def _still_waiting(ctx, what, deadline, provider, external_id, known,
                   current):
    wake_at = min(deadline, time.time() + ctx.conf.launcher.poll_attempt)
    seen = instance_cache.state_of(current) if known else None
    return exceptions.StillWaiting(what, wake_at, provider, external_id,
                                   seen)


class CreateInstance(base.FleetflowTask):
    """Create the node's instance, tagged with the node's id.

    When this attempt may have created it already (the task runs again
    after a crash), the instance is looked up by its tag first, so a
    resumed launch never makes a second one.

    Revert: record the instance on the node (its ``external_id``) and ask
    the cloud to delete it, without waiting: the next attempt waits until
    it is gone (:class:`WaitForLastInstanceGone`), and after the last
    attempt the node's delete flow does. Unless the node has left the
    building state: then another run of the same launch (a conductor that
    took the flow over from one that froze past its claim) finished it,
    and the instance is the node's now.
    """

    def execute(self, node_id, provider, pool, label, attempt):
        ctx = self.ctx
        cloud = ctx.provider(provider)
        node = ctx.store.get_node(node_id)
        instance = None
        if node['launch_attempts'] >= attempt:
            instance = cloud.driver.find_instance(node_id)
        ctx.store.update_node(node_id, launch_attempts=attempt)
        if instance is None:
            metadata = {driver_base.META_NODE_ID: node_id,
                        driver_base.META_POOL: pool,
                        driver_base.META_PROVIDER: provider,
                        driver_base.META_ATTEMPT: str(attempt)}
            instance = cloud.driver.create_instance(
                node_id, cloud.pool(pool), cloud.label(pool, label),
                metadata)
            self.log(node_id, node).info(
                'Created instance %s (attempt %d)', instance.external_id,
                attempt)
        return dict(instance.to_dict(), created_at=time.time())

    def revert(self, node_id, provider, result, **kwargs):
        if isinstance(result, tf_failure.Failure) or result is None:
            return
        external_id = result['external_id']
        log = self.log(node_id)
        # Recorded first: whatever happens next, the next attempt, or the
        # node's delete flow, knows which instance to see gone.
        if not self.ctx.store.update_node(
                node_id, expected=[node_states.BUILDING],
                external_id=external_id):
            node = self.ctx.store.find_node(node_id)
            if node is not None:
                log.warning('Not deleting instance %s: the node is %s, '
                            'another run of its launch finished it',
                            external_id, node['state'])
                return
        try:
            self.ctx.provider(provider).driver.delete_instance(external_id)
        except driver_base.NotFound:
            return
        except driver_base.DriverError as e:
            log.warning('Deleting instance %s failed (%s); asked again '
                        'while it is waited for', external_id, e)
            return
        log.info('Deleting instance %s', external_id)


def _active_or_failed(known, current):
    return known and (current is None
                      or current.state != driver_base.BUILDING)


def _gone(known, current):
    return known and current is None


def _waiting(ctx, what, provider, external_id, not_before, settled,
             deadline):
    """Whether a poll now would find ``external_id`` still unsettled.

    Looks at the listing without waiting: a :class:`StillWaiting` when the
    poll would only raise it, else None (the poll decides).
    """
    known, current = ctx.provider(provider).cache.lookup(external_id,
                                                         not_before)
    if settled(known, current) or time.time() >= deadline:
        return None
    return _still_waiting(ctx, what % external_id, deadline, provider,
                          external_id, known, current)


class WaitForInstanceActive(base.FleetflowTask):
    """Poll until the instance is active; an instance in ERROR fails at once.

    One poll does not call the cloud: it reads the provider's shared
    instance listing, and the runner parks the flow until that listing
    changes; ``waiting`` lets it park the flow before the poll.
    """

    STILL = 'instance %s not active yet'

    def waiting(self, provider, instance, deadline):
        return _waiting(self.ctx, self.STILL, provider,
                        instance['external_id'], instance['created_at'],
                        _active_or_failed, deadline)

    def execute(self, provider, instance, deadline):
        external_id = instance['external_id']
        known, current = _look(
            self.ctx, provider, external_id, instance['created_at'],
            _active_or_failed)
        if known and current is None:
            raise driver_base.DriverError(
                'instance %s disappeared while building' % external_id)
        if known and current.state == driver_base.ACTIVE:
            return dict(current.to_dict(), created_at=instance['created_at'])
        if known and current.state == driver_base.ERROR:
            error = driver_base.FAULT_ERRORS.get(
                current.fault_kind, exceptions.InstanceErrorState)
            raise error('instance %s went to ERROR: %s'
                        % (external_id, current.fault))
        if time.time() >= deadline:
            raise exceptions.LaunchTimeout(
                'instance %s not active within launch-timeout'
                % external_id)
        raise _still_waiting(
            self.ctx, self.STILL % external_id, deadline,
            provider, external_id, known, current)


class DeleteInstance(base.FleetflowTask):
    """Delete the node's instance; one that is not found is deleted.

    A node that never learnt its instance's id is looked up by its tag.
    Nothing to revert: a failed delete is tried again later.
    """

    def execute(self, node_id, provider, external_id):
        driver = self.ctx.provider(provider).driver
        if external_id is None:
            found = driver.find_instance(node_id)
            if found is None:
                return None
            external_id = found.external_id
        try:
            driver.delete_instance(external_id)
        except driver_base.NotFound:
            return None
        self.log(node_id, {}).info('Deleting instance %s', external_id)
        return {'external_id': external_id, 'deleted_at': time.time()}


class WaitForInstanceGone(base.FleetflowTask):
    """Poll until the deleted instance no longer exists.

    Like :class:`WaitForInstanceActive`, it reads the shared listing, and
    ``waiting`` lets the runner park the flow before the poll.
    """

    STILL = 'instance %s not gone yet'

    def waiting(self, provider, deleted, deadline):
        if deleted is None:
            return None
        return _waiting(self.ctx, self.STILL, provider,
                        deleted['external_id'], deleted['deleted_at'],
                        _gone, deadline)

    def execute(self, provider, deleted, deadline):
        if deleted is None:
            return
        external_id = deleted['external_id']
        known, current = _look(
            self.ctx, provider, external_id, deleted['deleted_at'], _gone)
        if known and current is None:
            return
        if time.time() >= deadline:
            raise driver_base.DriverError(
                'instance %s still exists after the delete timeout'
                % external_id)
        raise _still_waiting(
            self.ctx, self.STILL % external_id, deadline,
            provider, external_id, known, current)


class WaitForLastInstanceGone(WaitForInstanceGone):
    """Before an attempt: poll until the last attempt's instance is gone.

    The instance is the one :meth:`CreateInstance.revert` recorded on the
    node; while the listing still holds it, not deleting, a
    ``poll_attempt`` after the wait began, its delete is asked for again
    (the revert's may have failed); once it is gone, the node forgets it.
    Like :class:`WaitForInstanceActive`, the flow is parked while it
    waits, holding no worker, and ``waiting`` lets the runner park it
    before the poll. An attempt that created its instance already (run
    again after a crash) has nothing left to wait for.

    :param poll_timeout: the poll's timeout: the wait began that long
        before its deadline, after the revert asked for the delete.
    """

    STILL = 'the last attempt\'s instance %s not gone yet'

    def __init__(self, poll_timeout, **kwargs):
        super().__init__(**kwargs)
        self.poll_timeout = poll_timeout

    def _last(self, node_id, attempt, deadline):
        """What :class:`WaitForInstanceGone` waits for, or None."""
        if attempt == 1:
            return None   # no attempt before it: nothing to read
        node = self.ctx.store.get_node(node_id)
        if node['external_id'] is None or node['launch_attempts'] >= attempt:
            return None
        return {'external_id': node['external_id'],
                'deleted_at': deadline - self.poll_timeout}

    def _asks_again(self, last, waiting):
        """Whether to ask for the delete again (see the class)."""
        return waiting.seen_state not in (
            None, instance_cache.GONE, driver_base.DELETING) and \
            time.time() - last['deleted_at'] >= \
            self.ctx.conf.launcher.poll_attempt

    def waiting(self, node_id, provider, attempt, deadline):
        last = self._last(node_id, attempt, deadline)
        reason = super().waiting(provider, last, deadline)
        if reason is not None and self._asks_again(last, reason):
            return None   # the poll asks
        return reason

    def execute(self, node_id, provider, attempt, deadline):
        last = self._last(node_id, attempt, deadline)
        if last is None:
            return
        try:
            super().execute(provider, last, deadline)
        except exceptions.StillWaiting as waiting:
            if self._asks_again(last, waiting):
                self._delete(node_id, provider, waiting.external_id)
            raise
        self.ctx.store.update_node(node_id, expected=[node_states.BUILDING],
                                   external_id=None)

    def _delete(self, node_id, provider, external_id):
        try:
            self.ctx.provider(provider).driver.delete_instance(external_id)
        except driver_base.NotFound:
            pass
        except driver_base.DriverError as e:
            self.log(node_id).warning('Deleting instance %s failed (%s)',
                                      external_id, e)
