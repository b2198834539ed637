"""The stat key of a launch's failure."""

from taskflow.types import failure as tf_failure
import testtools

from fleetflow.drivers import base as driver_base
from fleetflow import exceptions
from fleetflow import stats


def failure_of(error):
    try:
        raise error
    except Exception:
        return tf_failure.Failure()


class TestStatKey(testtools.TestCase):

    def test_the_exception_names_its_key(self):
        self.assertEqual('error.quota', stats.stat_key(
            [failure_of(driver_base.QuotaError('over quota'))]))
        self.assertEqual('error.instance', stats.stat_key(
            [failure_of(exceptions.InstanceErrorState('ERROR'))]))

    def test_a_restored_failure_is_matched_by_class_name(self):
        # A failure read back from a logbook has no exception object.
        restored = tf_failure.Failure.from_dict(
            failure_of(exceptions.LaunchTimeout('too slow')).to_dict())
        self.assertIsNone(restored.exception)
        self.assertEqual('error.timeout', stats.stat_key([restored]))

    def test_anything_else_is_unknown(self):
        self.assertEqual('error.unknown',
                         stats.stat_key([failure_of(ValueError('bad'))]))
        self.assertEqual('error.unknown', stats.stat_key([]))
