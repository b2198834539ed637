"""A simulated cloud for tests and benchmarks.

Instances live in a SQLite file (``state-path``) so that the cloud outlives
a launcher that crashes, and so that two processes (a launcher and a test,
or two launchers) see one cloud. An instance is BUILDING until
``create-latency`` seconds after it was created, then ACTIVE; a delete takes
``delete-latency`` seconds. ``quota`` limits are enforced with QuotaError and
``faults`` injects each fault kind at a rate between 0 and 1 (an
``instance-error`` or ``capacity-error`` instance goes to ERROR when it
would have become ACTIVE, the latter with fault kind ``capacity``). Every
call, and every fault injected, is counted in the file, so a benchmark can
report the API calls made and a soak the faults it met. The file keeps every
instance the provider ever had, deleted ones included (append-only): its
history is the evidence that no node had two instances at once.
"""

import contextlib
import json
import os
import random
import sqlite3
import threading
import time
import uuid

import voluptuous as v

from fleetflow.drivers import base

RATE = v.All(v.Any(int, float), v.Range(min=0, max=1))
LATENCY = v.All(v.Any(int, float), v.Range(min=0))
FAULTS = ('create-error', 'instance-error', 'capacity-error', 'quota-error',
          'rate-limit', 'delete-error')
#: an instance's ``error`` column: its fault and fault kind in ERROR
ERRORS = {1: ('simulated instance error', None),
          2: ('simulated capacity error: no valid host', 'capacity')}
CALLS = ('create', 'list', 'delete')
#: the prefix of a fault kind's count in the calls table
FAULT_CALL = 'fault:'

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY, provider TEXT NOT NULL, metadata TEXT NOT NULL,
    cores INTEGER NOT NULL, ram INTEGER NOT NULL, created REAL NOT NULL,
    active_at REAL NOT NULL, error INTEGER NOT NULL, gone_at REAL);
CREATE TABLE IF NOT EXISTS calls (
    provider TEXT NOT NULL, call TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (provider, call));
CREATE INDEX IF NOT EXISTS ix_instances_live ON instances (provider, gone_at);
CREATE TABLE IF NOT EXISTS scripted_faults (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, provider TEXT NOT NULL,
    kind TEXT NOT NULL, inject INTEGER NOT NULL);
"""


class FakeDriver(base.Driver):
    """A simulated cloud whose state is kept in a SQLite file."""

    provider_schema = {
        'state-path': str,
        'create-latency': LATENCY,
        'delete-latency': LATENCY,
        'quota': {'instances': int, 'cores': int, 'ram': int},
        'faults': {v.Optional(kind): RATE for kind in FAULTS},
        'rate-limit-delay': LATENCY,
        'interface-ip': str,
        'connection-port': int,
    }
    label_schema = {
        'cloud-image': str,
        'flavor-name': str,
        'cores': v.All(int, v.Range(min=0)),
        'ram': v.All(int, v.Range(min=0)),
    }

    def __init__(self, provider, conf):
        super().__init__(provider, conf)
        self.path = provider.get('state-path') or os.path.join(
            conf.state_path, 'fake-cloud.sqlite')
        self.create_latency = provider.get('create-latency', 0)
        self.delete_latency = provider.get('delete-latency', 0)
        self.quota = provider.get('quota', {})
        self.faults = provider.get('faults', {})
        self.rate_limit_delay = provider.get('rate-limit-delay', 1.0)
        self.interface_ip = provider.get('interface-ip', '198.51.100.1')
        self.port = provider.get('connection-port', 22)
        #: per thread: the fault injected in the call under way, if any
        self._local = threading.local()
        self._random = random.Random()
        # An instance's metadata never changes: each is parsed once.
        self._metadata = {}
        os.makedirs(os.path.dirname(os.path.abspath(self.path)),
                    exist_ok=True)
        self._connection().executescript(SCHEMA)

    def _connection(self):
        db = getattr(self._local, 'db', None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60,
                                 isolation_level=None)
            db.execute('PRAGMA journal_mode=WAL')
            db.execute('PRAGMA synchronous=NORMAL')
            self._local.db = db
        return db

    @contextlib.contextmanager
    def _transaction(self):
        db = self._connection()
        db.execute('BEGIN IMMEDIATE')
        try:
            yield db
        except BaseException:
            db.execute('ROLLBACK')
            raise
        db.execute('COMMIT')

    def _count(self, db, call):
        db.execute('INSERT INTO calls VALUES (?, ?, 1) ON CONFLICT (provider, '
                   'call) DO UPDATE SET count = count + 1', (self.name, call))

    @contextlib.contextmanager
    def _call(self, call):
        """A transaction for the API call ``call``, counted in it.

        A call that fails is counted after the rollback, on its own, with
        the fault that made it fail.
        """
        self._local.fault = None
        self._local.scripted = []
        try:
            with self._transaction() as db:
                self._count(db, call)
                yield db
        except BaseException:
            db = self._connection()
            self._count(db, call)
            # The rollback undid the use of the scripted outcomes it used.
            db.executemany('DELETE FROM scripted_faults WHERE seq = ?',
                           [(seq,) for seq in self._local.scripted])
            if self._local.fault:
                self._count(db, FAULT_CALL + self._local.fault)
            raise

    def script_faults(self, kind, outcomes):
        """Decide the next checks of fault ``kind`` in order.

        ``outcomes`` holds booleans, one per check of that kind (True
        injects the fault), in whichever process the check is made; once
        they are used up, the configured rate decides again.
        """
        with self._transaction() as db:
            db.execute('DELETE FROM scripted_faults WHERE provider = ? AND '
                       'kind = ?', (self.name, kind))
            db.executemany('INSERT INTO scripted_faults (provider, kind, '
                           'inject) VALUES (?, ?, ?)',
                           [(self.name, kind, int(bool(outcome)))
                            for outcome in outcomes])

    def _fault(self, kind):
        """Whether to inject fault ``kind`` now (noted for the count).

        Called in an API call's transaction.
        """
        row = self._connection().execute(
            'DELETE FROM scripted_faults WHERE seq = (SELECT min(seq) FROM '
            'scripted_faults WHERE provider = ? AND kind = ?) '
            'RETURNING seq, inject', (self.name, kind)).fetchone()
        if row is not None:
            self._local.scripted.append(row[0])
            inject = bool(row[1])
        else:
            inject = self._random.random() < self.faults.get(kind, 0)
        if inject:
            self._local.fault = kind
        return inject

    def _error(self):
        """The ``error`` column of a new instance (:data:`ERRORS`)."""
        for error, kind in ((1, 'instance-error'), (2, 'capacity-error')):
            if self._fault(kind):
                self._count(self._connection(), FAULT_CALL + kind)
                return error
        return 0

    def _instance(self, row, now):
        (instance_id, metadata, created, active_at, error) = row
        parsed = self._metadata.get(instance_id)
        if parsed is None:
            parsed = self._metadata[instance_id] = json.loads(metadata)
        fault = kind = None
        if error and now >= active_at:
            state = base.ERROR
            fault, kind = ERRORS[error]
        elif now >= active_at:
            state = base.ACTIVE
        else:
            state = base.BUILDING
        return base.Instance(
            external_id=instance_id, state=state,
            metadata=parsed, fault=fault, fault_kind=kind,
            interface_ip=self.interface_ip if state == base.ACTIVE else None,
            private_ipv4=self.interface_ip if state == base.ACTIVE else None,
            connection_port=self.port, region='fake-region', az='fake-az')

    def _live(self, columns, now, where='', args=()):
        """SELECT ``columns`` of the instances not gone at ``now``.

        The history keeps every deleted instance: the two halves of the
        query each use the index, where ``gone_at IS NULL OR gone_at > ?``
        would read the whole history.
        """
        half = 'SELECT %s FROM instances WHERE provider = ? AND %%s %s' % (
            columns, where)
        return (half % 'gone_at IS NULL' + ' UNION ALL ' +
                half % 'gone_at > ?',
                (self.name,) + tuple(args) + (self.name, now) + tuple(args))

    def _select(self, db, where='', args=()):
        now = time.time()
        sql, values = self._live('id, metadata, created, active_at, error',
                                 now, where, args)
        rows = db.execute(sql + ' ORDER BY created', values)
        return [self._instance(row, now) for row in rows]

    def create_instance(self, node_id, pool, label, metadata):
        now = time.time()
        with self._call('create') as db:
            if self._fault('rate-limit'):
                raise base.RateLimitError(
                    'simulated rate limit', now + self.rate_limit_delay)
            if self._fault('quota-error'):
                raise base.QuotaError('simulated quota error')
            if self._fault('create-error'):
                raise base.DriverError('simulated create error')
            cores, ram = label.get('cores', 1), label.get('ram', 1024)
            sql, values = self._live('cores, ram', now)
            used = db.execute(
                'SELECT count(*), coalesce(sum(cores), 0), '
                'coalesce(sum(ram), 0) FROM (%s)' % sql, values).fetchone()
            for (kind, need), in_use in zip(
                    (('instances', 1), ('cores', cores), ('ram', ram)), used):
                limit = self.quota.get(kind)
                if limit is not None and in_use + need > limit:
                    raise base.QuotaError('quota exceeded for %s: %d of %d '
                                          'in use' % (kind, in_use, limit))
            instance_id = 'fake-' + uuid.uuid4().hex[:12]
            db.execute('INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, '
                       '?, NULL)',
                       (instance_id, self.name, json.dumps(metadata), cores,
                        ram, now, now + self.create_latency,
                        self._error()))
            return self._select(db, 'AND id = ?', (instance_id,))[0]

    def list_instances(self):
        with self._call('list') as db:
            instances = self._select(db)
        # Keep the parsed metadata of the instances that are left.
        self._metadata = {instance.external_id: instance.metadata
                          for instance in instances}
        return instances

    def delete_instance(self, external_id):
        now = time.time()
        with self._call('delete') as db:
            if not self._select(db, 'AND id = ?', (external_id,)):
                raise base.NotFound('instance %s not found' % external_id)
            if self._fault('delete-error'):
                raise base.DriverError('simulated delete error')
            db.execute('UPDATE instances SET gone_at = ? WHERE id = ? AND '
                       '(gone_at IS NULL OR gone_at > ?)',
                       (now + self.delete_latency, external_id,
                        now + self.delete_latency))

    def instance_history(self):
        """Every instance this provider ever had, deleted ones included.

        Dicts of ``external_id``, ``node_id`` (its tag), ``created`` and
        ``gone_at`` (when it is or will be gone; None while not deleted),
        oldest first: tests count the instances made for each node.
        """
        rows = self._connection().execute(
            'SELECT id, metadata, created, gone_at FROM instances WHERE '
            'provider = ? ORDER BY created', (self.name,)).fetchall()
        return [{'external_id': row[0],
                 'node_id': json.loads(row[1]).get(base.META_NODE_ID),
                 'created': row[2], 'gone_at': row[3]} for row in rows]

    def get_quota_limits(self):
        return base.Quota(**{k: self.quota.get(k) for k in base.Quota.FIELDS})

    def get_quota_for_label(self, pool, label):
        return base.Quota(instances=1, cores=label.get('cores', 1),
                          ram=label.get('ram', 1024))

    def call_counts(self):
        """API calls made to this provider, by kind, across processes."""
        with self._transaction() as db:
            rows = db.execute('SELECT call, count FROM calls WHERE '
                              'provider = ?', (self.name,)).fetchall()
        counts = dict.fromkeys(CALLS, 0)
        counts.update(row for row in rows if row[0] in CALLS)
        return counts

    def fault_counts(self):
        """Faults injected into this provider's calls, by kind."""
        with self._transaction() as db:
            rows = db.execute('SELECT call, count FROM calls WHERE '
                              'provider = ? AND call LIKE ?',
                              (self.name, FAULT_CALL + '%')).fetchall()
        counts = dict.fromkeys(FAULTS, 0)
        counts.update((call[len(FAULT_CALL):], count) for call, count in rows)
        return counts
