"""The fleet's TaskFlow jobboard: its configuration, clients and jobs.

With ``[jobboard] enabled``, flows are not run by the process that decides
them. A launcher records the flow detail in the node's logbook in the
shared database (as the in-process runner does, with the factory and
inputs that rebuild the flow) and posts a job on the fleet's jobboard
(Redis or ZooKeeper): the job names the flow detail (``flow_uuid``) and
the node (``node_id``, the logbook's uuid). Conductors (TaskFlow's own,
:mod:`taskflow.conductors`, with fleetflow's check of each job) on any
host claim jobs, load the flow from its flow detail and run it; a job is
consumed when its flow has finished.

A flow moves between processes (recorded by one, run by another, taken
over by a third), so the persistence connection is told to forget what
it remembers writing of a flow when the flow is posted and when it is
claimed.
"""

import contextlib
import logging
import re
import threading

from oslo_utils import netutils
from taskflow import exceptions as tf_exceptions
from taskflow.jobs import backends as job_backends
from taskflow import states

from fleetflow import exceptions
from fleetflow.execution import taskflow_overrides

LOG = logging.getLogger(__name__)

REDIS_PORT = 6379
ZOOKEEPER_PORT = 2181
NAMESPACE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')


def board_config(conf):
    """``(backend, options)`` of the TaskFlow jobboard ``conf`` names.

    :raises ConfigError: on options the backend cannot take.
    """
    jb = conf.jobboard
    if not NAMESPACE.match(jb.namespace or ''):
        raise exceptions.ConfigError(
            '[jobboard] namespace: %r: use letters, digits, "_", "." and '
            '"-"' % jb.namespace)
    if not jb.hosts:
        raise exceptions.ConfigError('[jobboard] hosts: no host given')
    if jb.backend == 'redis':
        if len(jb.hosts) != 1:
            raise exceptions.ConfigError(
                '[jobboard] hosts: Redis takes one host[:port], not %s'
                % ', '.join(jb.hosts))
        host, port = netutils.parse_host_port(jb.hosts[0],
                                              default_port=REDIS_PORT)
        options = {'host': host, 'port': port, 'namespace': jb.namespace,
                   'socket_timeout': float(min(10, jb.claim_expiry)),
                   'socket_connect_timeout': 5.0}
        if jb.username:
            options['username'] = jb.username
        if jb.password:
            options['password'] = jb.password
        if jb.tls:
            # The server's certificate must name the host.
            options.update(ssl=True, ssl_cert_reqs='required',
                           ssl_check_hostname=True)
            for option, name in (('ssl_ca_certs', 'tls_ca_file'),
                                 ('ssl_certfile', 'tls_cert_file'),
                                 ('ssl_keyfile', 'tls_key_file')):
                if jb[name]:
                    options[option] = jb[name]
        return 'redis', options
    if jb.tls and not jb.tls_ca_file:
        raise exceptions.ConfigError(
            '[jobboard] tls_ca_file: required with tls on ZooKeeper (the '
            'CA that signed the servers\' certificates; no other CA is '
            'trusted)')
    hosts = []
    for item in jb.hosts:
        host, port = netutils.parse_host_port(item,
                                              default_port=ZOOKEEPER_PORT)
        hosts.append('%s:%d' % (netutils.escape_ipv6(host), port))
    # TaskFlow keeps the trash and the conductors next to the jobs, named
    # by replacing the jobs' folder name in the path.
    path = '/fleetflow/%s/jobs' % jb.namespace
    if path.count('jobs') != 1:
        raise exceptions.ConfigError(
            '[jobboard] namespace: %r: a ZooKeeper namespace cannot '
            'contain "jobs"' % jb.namespace)
    # TaskFlow's version check asks the server with the "envi" four
    # letter word, which ZooKeeper 3.5 and later refuse unless allowed.
    return 'zookeeper', {'hosts': ','.join(hosts), 'path': path,
                         'timeout': float(jb.claim_expiry),
                         'check_compatible': False}


def _redis_client(options):
    """The Redis client (TaskFlow's), with the TLS options it would drop.

    TaskFlow passes on to redis-py only some options: not the hostname
    check.
    """
    from taskflow.utils import redis_utils
    return redis_utils.RedisClient(**{
        key: value for key, value in options.items()
        if key != 'namespace'})


def _kazoo_client(conf, options):
    """The ZooKeeper client: its session timeout is the claim expiry.

    With a user name, it authenticates with the digest scheme and creates
    every znode with an ACL that only that identity can use. With TLS,
    it checks that the server's certificate names the host, and trusts
    only the CA of ``tls_ca_file`` (:mod:`fleetflow.jobboard_tls`).
    """
    from kazoo import client as kazoo_client
    from kazoo import security

    from fleetflow import jobboard_tls
    jb = conf.jobboard
    kwargs = {'hosts': options['hosts'], 'timeout': options['timeout'],
              'logger': logging.getLogger(__name__ + '.kazoo')}
    if jb.username:
        kwargs['auth_data'] = [('digest', '%s:%s' % (jb.username,
                                                     jb.password or ''))]
        kwargs['default_acl'] = [security.make_digest_acl(
            jb.username, jb.password or '', all=True)]
    else:
        LOG.warning('[jobboard] username: not set; the jobboard\'s znodes '
                    'on ZooKeeper can be written by anyone who can reach '
                    'the servers')
    if jb.tls:
        kwargs.update(use_ssl=True, handler=jobboard_tls.TLSHandler(
            jb.tls_ca_file, jb.tls_cert_file, jb.tls_key_file))
    return kazoo_client.KazooClient(**kwargs)


def job_node(job):
    """The node id a job of fleetflow's is for (None for another job)."""
    return (job.details or {}).get('node_id')


class Board:
    """The fleet's jobboard, as :func:`taskflow.jobs.backends.fetch` makes it.

    :param persistence: the TaskFlow persistence backend that conductors
        load the jobs' logbooks from.
    """

    def __init__(self, conf, persistence=None):
        self.conf = conf
        self.backend, self.options = board_config(conf)
        self.claim_expiry = conf.jobboard.claim_expiry
        self.namespace = conf.jobboard.namespace
        kwargs = {'persistence': persistence}
        if self.backend == 'zookeeper':
            self._client = _kazoo_client(conf, self.options)
        else:
            self._client = _redis_client(self.options)
        kwargs['client'] = self._client
        self.jobboard = job_backends.fetch(
            'fleetflow-%s' % self.namespace,
            dict(self.options, board=self.backend), **kwargs)
        self._lock = threading.Lock()

    def connect(self):
        with self._lock:
            if not self.jobboard.connected:
                if self.backend == 'zookeeper':
                    self.jobboard.connect(timeout=max(10.0,
                                                      self.claim_expiry))
                else:
                    self.jobboard.connect()

    def close(self):
        with self._lock:
            if self.backend == 'zookeeper':
                taskflow_overrides.close_zookeeper_board(self.jobboard)
            self.jobboard.close()
            with contextlib.suppress(Exception):
                if self.backend == 'zookeeper':
                    self._client.stop()
                self._client.close()

    def post(self, node_id, book, detail):
        """Post the job of flow ``detail`` of node ``node_id``.

        The flow's inputs are not in the job: they are saved with the flow
        detail, and a conductor takes them from there only.
        """
        return self.jobboard.post(
            detail.name, book=book,
            details={'flow_uuid': detail.uuid, 'node_id': node_id})

    def jobs(self, fresh=True):
        """The jobs on the board (claimed or not), oldest first."""
        # A job that left the board while it was listed has no creation
        # time: last, and never compared with a time.
        return sorted(self.jobboard.iterjobs(ensure_fresh=fresh),
                      key=lambda job: (job.created_on is None,
                                       job.created_on or 0))

    def owner(self, job):
        """Who claimed ``job``; None when nobody does (or it is gone)."""
        try:
            return self.jobboard.find_owner(job)
        except TypeError:
            # TaskFlow's Redis board fails to decode the owner of a job
            # that has none (ZooKeeper's says None).
            if self.backend != 'redis':
                raise
            return None

    def describe(self):
        """One dict per job: what ``fleetflow job list`` shows."""
        rows = []
        for job in self.jobs():
            try:
                state = job.state
                owner = None
                if state == states.CLAIMED:
                    owner = self.owner(job)
                    if owner is None:
                        # Consumed or abandoned since its state was read.
                        state = job.state
            except tf_exceptions.NotFound:
                continue
            if state == states.COMPLETE:
                continue
            details = job.details or {}
            rows.append({'uuid': job.uuid, 'name': job.name,
                         'node_id': details.get('node_id'),
                         'flow_uuid': details.get('flow_uuid'),
                         'state': state, 'owner': owner,
                         'created_on': job.created_on})
        return rows


def forget_flow(ctx, flow_uuid):
    """Make the persistence connection forget what it wrote of a flow.

    The SQL connection remembers the atoms it wrote to save writes; once
    the flow is run elsewhere, what it remembers is wrong.
    """
    with contextlib.closing(ctx.persistence.get_connection()) as conn:
        forget = getattr(conn, 'forget_flow', None)
        if forget is not None:
            forget(flow_uuid)
