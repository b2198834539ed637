"""The lean SQL connection: what it writes, and when."""

import contextlib
import uuid

from sqlalchemy import event
from taskflow.persistence import models
from taskflow import states

from tests import base


class TestLeanConnection(base.TestCase):

    def setUp(self):
        super().setUp()
        self.ff = self.useFixture(base.FleetflowFixture(runner=False))
        self.conn = self.ff.ctx.persistence.get_connection()
        self.statements = []
        event.listen(self.ff.ctx.engine, 'before_cursor_execute',
                     lambda *args: self.statements.append(args[2]))

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
        self.conn.add_flow(book, detail, also=lambda db: db.execute(
            self.ff.store.node_update(node['id'], flow_id=detail.uuid)))
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
            del self.statements[:]
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
        del self.statements[:]
        detail.state = states.SUCCESS
        self.conn.update_flow_details(detail)
        # The flow's row, then every atom's notes at once.
        self.assertEqual(2, len(self.statements))
        self.assertEqual([{'ended': 1.0}] * 3,
                         [a.meta for a in self.stored(detail.uuid)])

    def test_a_running_mark_waits_for_the_atoms_next_change(self):
        book, detail = self.new_flow(atoms=1)
        self.conn.add_flow(book, detail)
        [atom] = detail
        del self.statements[:]
        atom.state = states.RUNNING
        self.conn.update_atom_details(atom)
        self.assertEqual([], self.statements)
        atom.state = states.SUCCESS
        atom.results = 42
        self.conn.update_atom_details(atom)
        self.assertEqual(1, len(self.statements))
        [stored] = self.stored(detail.uuid)
        self.assertEqual((states.SUCCESS, 42), (stored.state, stored.results))
