"""The fleetflow engine: TaskFlow's serial engine, leaner."""

from unittest import mock

from taskflow import engines
from taskflow import exceptions as tf_exceptions
from taskflow.patterns import linear_flow
from taskflow import states
from taskflow import task

from fleetflow import engine as ff_engine
from tests import base


class Double(task.Task):
    def execute(self, number):
        return number * 2


def _flow():
    return linear_flow.Flow('f').add(Double(name='double',
                                            provides='doubled'))


class TestEngine(base.TestCase):

    def load(self, flow=None):
        return engines.load(flow or _flow(), store={'number': 21},
                            engine=ff_engine.NAME)

    def test_found_by_name(self):
        self.assertIsInstance(self.load(), ff_engine.Engine)
        self.assertIsInstance(self.load().storage, ff_engine.Storage)

    def test_runs_and_saves_states_not_engine_progress(self):
        engine = self.load()
        engine.run()
        self.assertEqual(42, engine.storage.fetch('doubled'))
        self.assertEqual(states.SUCCESS,
                         engine.storage.get_atom_state('double'))
        detail = engine.storage._flowdetail.find(
            engine.storage.get_atom_uuid('double'))
        self.assertNotIn('progress', detail.meta)

    def test_engines_share_a_flow_and_its_compilation(self):
        flow = _flow()
        first, second = self.load(flow), self.load(flow)
        first.compile()
        second.compile()
        self.assertIs(first.compilation, second.compilation)
        first.run()
        second.run()
        self.assertEqual(42, second.storage.fetch('doubled'))

    def test_validates_once(self):
        engine = self.load()
        engine.compile()
        engine.prepare()
        with mock.patch.object(engine.storage, 'fetch_unsatisfied_args',
                               wraps=engine.storage.fetch_unsatisfied_args
                               ) as fetch:
            engine.validate()
            calls = fetch.call_count
            engine.validate()
        self.assertGreater(calls, 0)
        self.assertEqual(calls, fetch.call_count)

    def test_a_shared_flow_is_validated_once_per_set_of_inputs(self):
        flow = _flow()
        self.load(flow).run()
        with mock.patch.object(ff_engine.Storage, 'fetch_unsatisfied_args'
                               ) as fetch:
            self.load(flow).run()
        fetch.assert_not_called()
        # Another store, without the input: validated, and refused.
        engine = engines.load(flow, store={'other': 1},
                              engine=ff_engine.NAME)
        self.assertRaises(tf_exceptions.MissingDependencies, engine.run)

    def test_atom_details_are_those_the_engine_would_make(self):
        flow = _flow()
        [detail] = ff_engine.atom_details(flow)
        self.assertEqual('double', detail.name)
        self.assertEqual(states.PENDING, detail.state)
