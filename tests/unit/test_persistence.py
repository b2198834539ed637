"""The lean SQL connection: what it writes, and when."""

import contextlib
import uuid

import sqlalchemy as sa
from taskflow import exceptions as tf_exceptions
from taskflow.persistence import models
from taskflow import states

from fleetflow import persistence
from tests import base


class TestLeanConnection(base.TestCase):

    def setUp(self):
        super().setUp()
        self.ff = self.useFixture(base.FleetflowFixture(runner=False))
        self.conn = self.ff.ctx.persistence.get_connection()
        self.counted = 0

    @property
    def statements(self):
        """Statements run since the last :meth:`count_from_here`."""
        return self.ff.store.statements - self.counted

    def count_from_here(self):
        self.counted = self.ff.store.statements

    def new_flow(self, book_uuid='node-1', atoms=2):
        detail = models.FlowDetail('launch-x', uuid=str(uuid.uuid4()))
        for index in range(atoms):
            detail.add(models.TaskDetail('t%d' % index, str(uuid.uuid4())))
        book = models.LogBook('node-%s' % book_uuid, uuid=book_uuid)
        return book, detail

    def stored(self, flow_uuid):
        with contextlib.closing(
                self.ff.ctx.persistence.get_connection()) as conn:
            return conn.get_flow_details(flow_uuid)

    def test_add_flow_is_one_transaction_with_its_atoms(self):
        node = self.ff.create_node()
        book, detail = self.new_flow(node['id'])
        transactions = self.ff.store.transactions
        self.conn.add_flow(book, detail, also=lambda tx: self.ff.store
                           .update_node(node['id'], tx=tx,
                                        flow_id=detail.uuid))
        self.assertEqual(1, self.ff.store.transactions - transactions)
        self.assertEqual(detail.uuid, self.ff.node(node['id'])['flow_id'])
        # A second flow joins the book the first one made.
        book, second = self.new_flow(node['id'])
        self.conn.add_flow(book, second)
        got = self.conn.get_logbook(node['id'])
        self.assertEqual({detail.uuid, second.uuid}, {f.uuid for f in got})
        self.assertEqual(['t0', 't1'],
                         sorted(a.name for a in self.stored(second.uuid)))

    def test_passing_states_are_not_written_a_stop_and_an_end_are(self):
        book, detail = self.new_flow()
        self.conn.add_flow(book, detail)
        written = []
        for state in (states.RESUMING, states.SUSPENDED, states.RUNNING,
                      states.SUSPENDING, states.SUSPENDED, states.RUNNING,
                      states.SUCCESS):
            self.count_from_here()
            detail.state = state
            self.conn.update_flow_details(detail)
            if self.statements:
                written.append(state)
        self.assertEqual([states.SUSPENDED, states.SUCCESS], written)
        self.assertEqual(states.SUCCESS, self.stored(detail.uuid).state)

    def test_an_ended_flow_writes_its_atoms_notes_in_one_statement(self):
        book, detail = self.new_flow(atoms=3)
        self.conn.add_flow(book, detail)
        for atom in detail:
            atom.meta = {'ended': 1.0}
        self.count_from_here()
        detail.state = states.SUCCESS
        self.conn.update_flow_details(detail)
        # The flow's row, then every atom's notes at once.
        self.assertEqual(2, self.statements)
        self.assertEqual([{'ended': 1.0}] * 3,
                         [a.meta for a in self.stored(detail.uuid)])

    def test_a_running_mark_waits_for_the_atoms_next_change(self):
        book, detail = self.new_flow(atoms=1)
        self.conn.add_flow(book, detail)
        [atom] = detail
        self.count_from_here()
        atom.state = states.RUNNING
        self.conn.update_atom_details(atom)
        self.assertEqual(0, self.statements)
        atom.state = states.SUCCESS
        atom.results = 42
        self.conn.update_atom_details(atom)
        self.assertEqual(1, self.statements)
        [stored] = self.stored(detail.uuid)
        self.assertEqual((states.SUCCESS, 42), (stored.state, stored.results))

    def rows(self):
        """Rows of the logbook tables, by table."""
        tables = self.conn._tables
        with self.ff.ctx.engine.connect() as db:
            return {table.name: db.execute(
                sa.select(sa.func.count()).select_from(table)).scalar()
                for table in (tables.logbooks, tables.flowdetails,
                              tables.atomdetails)}

    def test_a_destroyed_book_leaves_no_flow_or_atom(self):
        empty = self.rows()
        for node in ('node-1', 'node-2'):
            for _ in range(2):
                self.conn.add_flow(*self.new_flow(node, atoms=3))
        self.conn.destroy_logbook('node-1')
        self.assertEqual({'logbooks': 1, 'flowdetails': 2, 'atomdetails': 6},
                         {name: count - empty[name]
                          for name, count in self.rows().items()})
        self.conn.destroy_logbook('node-2')
        self.assertEqual(empty, self.rows())
        self.assertRaises(tf_exceptions.NotFound,
                          self.conn.destroy_logbook, 'node-2')

    def test_an_upgrade_deletes_flows_and_atoms_whose_book_is_gone(self):
        empty = self.rows()
        self.conn.add_flow(*self.new_flow('node-1', atoms=2))
        kept = self.rows()
        self.conn.add_flow(*self.new_flow('node-2', atoms=3))
        logbooks = self.conn._tables.logbooks
        with self.ff.ctx.engine.begin() as db:
            # The book alone, as TaskFlow's own destroy_logbook did.
            db.execute(logbooks.delete().where(logbooks.c.uuid == 'node-2'))
        persistence.upgrade(self.ff.ctx.engine)
        self.assertEqual(kept, self.rows())
        self.assertNotEqual(empty, kept)
