"""Prove the node answers on SSH and record its host keys."""

import time

from fleetflow import exceptions
from fleetflow.tasks import base

SCAN_INTERVAL = 1.0


class ScanHostKeys(base.FleetflowTask):
    """Scan the instance's SSH host keys, once per attempt.

    A node that does not answer yet is polled again (the runner parks the
    flow for a second) until the deadline, then the attempt fails with a
    keyscan error. A host that lacks a key expected of it (or, for a host
    whose every key is known, offers another) fails at once; of a host
    with expected keys only those are stored.
    """

    def execute(self, node_id, instance, deadline):
        host, port = instance['interface_ip'], instance['connection_port']
        try:
            return self.ctx.keyscanner.scan(
                host, port, instance['connection_type'],
                expected_keys=instance.get('host_keys'),
                exact=bool(instance.get('host_keys_exact')))
        except exceptions.HostUnreachable as e:
            if time.time() >= deadline:
                raise exceptions.KeyscanError(
                    '%s:%s did not answer SSH within boot-timeout: %s'
                    % (host, port, e))
            raise exceptions.StillWaiting(
                '%s:%s does not answer SSH yet' % (host, port),
                min(deadline, time.time() + SCAN_INTERVAL))
