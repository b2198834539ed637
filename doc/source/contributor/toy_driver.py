"""A worked example of a fleetflow driver: a toy cloud in this process.

Its instances are entries of a dict shared by every provider of the
process; each is active ``boot-seconds`` after it is created and answers
at 127.0.0.1. It shows the whole contract: the layout keys, the calls, the
metadata and the typed errors. A unit test launches and deletes nodes
through it with fleetflow's real flows (tests/unit/test_doc_driver.py).
"""

import itertools
import threading
import time

import voluptuous as v

from fleetflow.drivers import base

#: every toy instance of the process: ``{external_id: record}``
CLOUD = {}
_LOCK = threading.Lock()
_IDS = itertools.count(1)


class ToyDriver(base.Driver):
    """Instances as records of :data:`CLOUD`."""

    provider_schema = {
        'boot-seconds': v.All(v.Any(int, float), v.Range(min=0)),
        'max-instances': v.All(int, v.Range(min=1)),
    }
    label_schema = {
        'cores': v.All(int, v.Range(min=1)),
    }

    def __init__(self, provider, conf):
        super().__init__(provider, conf)
        self.boot_seconds = provider.get('boot-seconds', 0)
        self.max_instances = provider.get('max-instances')

    def create_instance(self, node_id, pool, label, metadata):
        with _LOCK:
            mine = [r for r in CLOUD.values()
                    if r['metadata'].get(base.META_PROVIDER) == self.name]
            if self.max_instances and len(mine) >= self.max_instances:
                # Not a failure: fleetflow aborts the node and serves its
                # request again later.
                raise base.QuotaError('%s: %d instances at most'
                                      % (self.name, self.max_instances))
            external_id = 'toy-%d' % next(_IDS)
            CLOUD[external_id] = {'metadata': dict(metadata),
                                  'created': time.time()}
            return self._instance(external_id, CLOUD[external_id])

    def list_instances(self):
        with _LOCK:
            return [self._instance(external_id, record)
                    for external_id, record in CLOUD.items()
                    if self.owned_metadata(record['metadata'])]

    def delete_instance(self, external_id):
        with _LOCK:
            if CLOUD.pop(external_id, None) is None:
                raise base.NotFound('no toy instance %s' % external_id)

    def get_quota_limits(self):
        return base.Quota(instances=self.max_instances)

    def get_quota_for_label(self, pool, label):
        return base.Quota(instances=1, cores=label.get('cores', 1))

    def _instance(self, external_id, record):
        booted = time.time() - record['created'] >= self.boot_seconds
        return base.Instance(
            external_id=external_id,
            state=base.ACTIVE if booted else base.BUILDING,
            metadata=dict(record['metadata']),
            interface_ip='127.0.0.1', private_ipv4='127.0.0.1')
