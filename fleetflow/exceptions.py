"""Errors that fleetflow raises to its callers."""


class FleetflowError(Exception):
    """Base of fleetflow's own errors."""


class ConfigError(FleetflowError):
    """The service configuration or the layout is not valid."""


class NodeStateConflict(FleetflowError):
    """A compare-and-set state change found the row in another state."""


class LaunchError(FleetflowError):
    """A launch attempt failed; the launch may be tried again."""

    stat_key = 'error.unknown'


class LaunchTimeout(LaunchError):
    """The instance did not become active within launch-timeout."""

    stat_key = 'error.servercreatetimeout'


class InstanceErrorState(LaunchError):
    """The instance went to ERROR in the cloud."""

    stat_key = 'error.status'


class KeyscanError(LaunchError):
    """SSH did not answer within boot-timeout, or its keys were refused."""

    stat_key = 'error.keyscan'


class HostKeyMismatch(KeyscanError):
    """The host offered keys other than the ones expected of it."""


class HostUnreachable(FleetflowError):
    """SSH does not answer yet."""


class StillWaiting(FleetflowError):
    """A poll found that the awaited change has not happened yet.

    The runner parks the flow instead of holding a thread: it resumes it
    when the provider's instance listing shows ``external_id`` in another
    state than ``seen_state``, or at ``wake_at`` at the latest.
    """

    def __init__(self, message, wake_at, provider=None, external_id=None,
                 seen_state=None):
        super().__init__(message)
        self.wake_at = wake_at
        self.provider = provider
        self.external_id = external_id
        self.seen_state = seen_state
