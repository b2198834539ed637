"""Tasks that act on the cloud through a provider's driver."""

import time

from taskflow.types import failure as tf_failure
import tenacity

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


def _retryable(error):
    return isinstance(error, driver_base.DriverError) and not isinstance(
        error, driver_base.NotFound)


def _wait_for_cloud(retry_state):
    """Until the time a rate limit gave, else a doubling pause up to 5 s."""
    error = retry_state.outcome.exception()
    retry_at = getattr(error, 'retry_at', None)
    if retry_at is not None:
        return max(0.0, retry_at - time.time())
    return min(5.0, 0.1 * 2 ** (retry_state.attempt_number - 1))


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

    Revert: delete the instance and wait until it is gone; unless the node
    has left the building state: then another run of the same launch (a
    conductor that took the flow over from one that froze past its claim)
    finished it, and the instance is the node's now.
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
        cloud = self.ctx.provider(provider)
        external_id = result['external_id']
        log = self.log(node_id)
        node = self.ctx.store.find_node(node_id)
        if node is not None and node['state'] != node_states.BUILDING:
            log.warning('Not deleting instance %s: the node is %s, another '
                        'run of its launch finished it', external_id,
                        node['state'])
            return
        # The next attempt must not start while this instance lives: a
        # failed delete is tried again until delete_timeout.
        deadline = time.time() + self.ctx.conf.launcher.delete_timeout
        try:
            for attempt in tenacity.Retrying(
                    retry=tenacity.retry_if_exception(_retryable),
                    stop=tenacity.stop_before_delay(
                        self.ctx.conf.launcher.delete_timeout),
                    wait=_wait_for_cloud, reraise=True,
                    before_sleep=lambda state: log.info(
                        'Deleting instance %s failed (%s); trying again',
                        external_id, state.outcome.exception())):
                with attempt:
                    cloud.driver.delete_instance(external_id)
        except driver_base.NotFound:
            return
        except driver_base.DriverError as e:
            log.warning('Deleting instance %s failed (%s); the leak cleanup '
                        'deletes it later', external_id, e)
            return
        if not cloud.cache.wait_gone(external_id,
                                     max(0, deadline - time.time())):
            log.warning('Instance %s still exists after %ss; the node\'s '
                        'cleanup deletes it later', external_id,
                        self.ctx.conf.launcher.delete_timeout)


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
