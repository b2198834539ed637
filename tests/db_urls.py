"""Database URLs the tests run against.

SQLite always; PostgreSQL when a server answers on
``FLEETFLOW_TEST_POSTGRES_URL``, or else on the URL ``tools/test-servers``
keeps in ``~/.config/fleetflow/test-postgres-url`` (or in
``FLEETFLOW_TEST_POSTGRES_URL_FILE``): a role that is no superuser, with a
random password. Each test gets a schema of its own, so tests run in
parallel. In CI (``CI=true``) a missing PostgreSQL server is a failure,
not a skip.
"""

import os
import uuid

import sqlalchemy as sa

URL_FILE = os.environ.get(
    'FLEETFLOW_TEST_POSTGRES_URL_FILE',
    os.path.expanduser('~/.config/fleetflow/test-postgres-url'))


def configured_url():
    """The PostgreSQL URL the tests use.

    :raises LookupError: when none is configured.
    """
    url = os.environ.get('FLEETFLOW_TEST_POSTGRES_URL')
    if url:
        return url
    try:
        with open(URL_FILE) as f:
            return f.read().strip()
    except OSError as e:
        raise LookupError('no FLEETFLOW_TEST_POSTGRES_URL and no %s (run '
                          'tools/test-servers): %s' % (URL_FILE, e.strerror))


def postgres_url(testcase):
    """A PostgreSQL URL whose search path is a new, empty schema."""
    schema = 'test_%s' % uuid.uuid4().hex[:12]
    url = None
    try:
        url = configured_url()
        admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with admin.begin() as conn:
            conn.execute(sa.text('CREATE SCHEMA %s' % schema))
    except Exception as e:
        if os.environ.get('CI'):
            shown = sa.engine.make_url(url).render_as_string(
                hide_password=True) if url else None
            testcase.fail('PostgreSQL is not available in CI at %s: %s'
                          % (shown, e))
        testcase.skipTest('no PostgreSQL server: %s' % e)

    def drop():
        with admin.begin() as conn:
            conn.execute(sa.text('DROP SCHEMA %s CASCADE' % schema))
        admin.dispose()

    testcase.addCleanup(drop)
    separator = '&' if '?' in url else '?'
    return '%s%soptions=-csearch_path%%3D%s' % (url, separator, schema)
