"""Database URLs the tests run against.

SQLite always; PostgreSQL when a server answers on
``FLEETFLOW_TEST_POSTGRES_URL`` (by default the one ``tools/test-servers``
sets up). Each test gets a schema of its own, so tests run in parallel. In
CI (``CI=true``) a missing PostgreSQL server is a failure, not a skip.
"""

import os
import uuid

import sqlalchemy as sa

DEFAULT_POSTGRES = 'postgresql+psycopg2://fleetflow:fleetflow@127.0.0.1/' \
    'fleetflow_test'


def postgres_url(testcase):
    """A PostgreSQL URL whose search path is a new, empty schema."""
    url = os.environ.get('FLEETFLOW_TEST_POSTGRES_URL', DEFAULT_POSTGRES)
    schema = 'test_%s' % uuid.uuid4().hex[:12]
    try:
        admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with admin.begin() as conn:
            conn.execute(sa.text('CREATE SCHEMA %s' % schema))
    except Exception as e:
        if os.environ.get('CI'):
            testcase.fail('PostgreSQL is not available in CI at %s: %s'
                          % (url, e))
        testcase.skipTest('no PostgreSQL server: %s' % e)

    def drop():
        with admin.begin() as conn:
            conn.execute(sa.text('DROP SCHEMA %s CASCADE' % schema))
        admin.dispose()

    testcase.addCleanup(drop)
    separator = '&' if '?' in url else '?'
    return '%s%soptions=-csearch_path%%3D%s' % (url, separator, schema)
