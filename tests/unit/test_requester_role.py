"""A requester's PostgreSQL role: the request and node tables, no more.

Whoever can write the logbook tables can change what flows do; the
services that only ask for nodes get a role with rights on
``fleetflow_requests`` and ``fleetflow_nodes`` alone (the README's
security section). These tests make that role's rights on a real PostgreSQL
(``tools/test-servers`` makes the role, ``<tests' role>_requester``, and
lets the tests' role take it), use the Python client API and the CLI
through it, and show that the logbook tables are out of its reach.
"""

import os
import urllib.parse

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from fleetflow import client as ff_client
from fleetflow.db import api as db_api
from fleetflow.db import migration
from fleetflow.db import models
from fleetflow import node_states
from tests import base
from tests import db_urls
from tests.unit import test_cli

#: what the README grants a requester
GRANTS = ('GRANT USAGE ON SCHEMA {schema} TO {role}',
          'GRANT SELECT, INSERT, UPDATE, DELETE ON '
          '{schema}.fleetflow_requests, {schema}.fleetflow_nodes TO {role}')


class TestRequesterRole(test_cli.CliTestCase):

    def setUp(self):
        # The CLI environment's own SQLite database is not used.
        super().setUp()
        admin_url = db_urls.postgres_url(self)
        admin = db_api.create_engine(admin_url)
        self.addCleanup(admin.dispose)
        migration.upgrade(admin)
        self.admin = db_api.Store(admin)
        with admin.connect() as conn:
            schema, role = conn.execute(sa.text(
                "SELECT current_schema(), current_user || '_requester'")
            ).first()
            member = conn.execute(sa.text(
                "SELECT pg_has_role(current_user, oid, 'MEMBER') FROM "
                "pg_roles WHERE rolname = :role"), {'role': role}).scalar()
        if not member:
            message = ('no role %s that the tests\' role may take: run '
                       'tools/test-servers' % role)
            if os.environ.get('CI'):
                self.fail(message)
            self.skipTest(message)
        # Its rights on this test's schema go with the schema.
        with admin.begin() as conn:
            for grant in GRANTS:
                conn.execute(sa.text(grant.format(schema=schema, role=role)))
        # The test's connections take the requester's role at once.
        self.url = admin_url.replace(
            'options=', 'options=%s' % urllib.parse.quote('-crole=%s ' % role),
            1)
        self.conf = base.make_conf(self.env.state_path, db_url=self.url)
        self.addCleanup(self.conf.clear_override, 'connection', 'database')
        self.env.write_conf({'DEFAULT': {'state_path': self.env.state_path},
                             'database': {'connection': self.url}})

    def test_the_client_api_works(self):
        with ff_client.Client(self.conf, poll_interval=0.05) as fleet:
            request = fleet.create_request(['small', 'small'],
                                           requestor='ci')
            # A launcher serves it.
            self.admin.set_request_state(request['id'], models.PENDING)
            nodes = [self.admin.create_node('small', 'fake-1', 'main',
                                            state=node_states.READY,
                                            request_id=request['id'])
                     for _ in range(2)]
            self.assertTrue(self.admin.fulfil_request(
                request['id'], [node['id'] for node in nodes]))
            done = fleet.wait_for_request(request['id'], timeout=10)
            self.assertEqual('fulfilled', done['state'])
            self.assertEqual(2, len(fleet.request_nodes(request['id'])))
            self.assertEqual(2, len(fleet.list_nodes()))
            fleet.hold_node(nodes[0]['id'], reason='debugging')
            fleet.release_request(request['id'])
            self.assertEqual({node_states.HOLD, node_states.USED},
                             {node['state'] for node in fleet.list_nodes()})
            self.assertRaises(ff_client.NotFound, fleet.get_request,
                              request['id'])

    def test_the_cli_works(self):
        created = self.env.json('request', 'create', 'small')
        self.assertEqual('requested', created['state'])
        self.assertEqual([created['id']], [
            row['id'] for row in self.env.json('request', 'list')])
        self.admin.create_node('small', 'fake-1', 'main')
        self.assertEqual(1, len(self.env.json('node', 'list')))
        result = self.env.cli('request', 'release', created['id'])
        self.assertEqual(0, result.rc, result)

    def test_the_logbook_tables_are_out_of_reach(self):
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        self.addCleanup(engine.dispose)
        for table in ('logbooks', 'flowdetails', 'atomdetails',
                      'fleetflow_locks'):
            with engine.connect() as conn:
                error = self.assertRaises(
                    sa_exc.ProgrammingError, conn.execute,
                    sa.text('SELECT * FROM %s' % table))
                self.assertIn('permission denied for table %s' % table,
                              str(error))
