"""fleetflow's overrides of TaskFlow: its engine, and the RetryDetail fix."""

from unittest import mock

from taskflow import engines
from taskflow import exceptions as tf_exceptions
from taskflow.patterns import linear_flow
from taskflow.persistence import models as tf_models
from taskflow import states
from taskflow import task
from taskflow.types import failure as tf_failure

from fleetflow.execution import taskflow_overrides
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
                            engine=taskflow_overrides.NAME)

    def test_found_by_name(self):
        self.assertIsInstance(self.load(), taskflow_overrides.Engine)
        self.assertIsInstance(self.load().storage, taskflow_overrides.Storage)

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
        with mock.patch.object(taskflow_overrides.Storage,
                               'fetch_unsatisfied_args') as fetch:
            self.load(flow).run()
        fetch.assert_not_called()
        # Another store, without the input: validated, and refused.
        engine = engines.load(flow, store={'other': 1},
                              engine=taskflow_overrides.NAME)
        self.assertRaises(tf_exceptions.MissingDependencies, engine.run)

    def test_atom_details_are_those_the_engine_would_make(self):
        flow = _flow()
        [detail] = taskflow_overrides.atom_details(flow)
        self.assertEqual('double', detail.name)
        self.assertEqual(states.PENDING, detail.state)


class TestRetryDetailFix(base.TestCase):

    def test_history_values_survive_a_round_trip(self):
        try:
            raise RuntimeError('still waiting')
        except RuntimeError:
            failure = tf_failure.Failure()
        detail = tf_models.RetryDetail('poll', 'uuid-1')
        detail.results = [(1234.5, {'wait': failure}), (1234.5, {})]
        again = tf_models.RetryDetail.from_dict(detail.to_dict())
        self.assertEqual([1234.5, 1234.5], [v for v, _f in again.results])
        self.assertTrue(again.results[0][1]['wait'].check(RuntimeError))

    def test_fixed_only_where_the_probe_finds_the_bug(self):
        stock = taskflow_overrides.STOCK_RETRY_FROM_DICT
        self.assertEqual(
            not taskflow_overrides.retry_history_survives(stock),
            taskflow_overrides.RETRY_HISTORY_FIXED)
        self.assertTrue(taskflow_overrides.retry_history_survives())

    def test_a_taskflow_without_the_bug_is_left_alone(self):
        sound = tf_models.RetryDetail.from_dict
        with mock.patch.object(tf_models.RetryDetail, 'from_dict', sound):
            self.assertFalse(taskflow_overrides.fix_retry_history())
            self.assertIs(sound, tf_models.RetryDetail.from_dict)
