"""Drivers, loaded only through the ``fleetflow.drivers`` entry points."""

from stevedore import driver as stevedore_driver
from stevedore import exception as stevedore_exc

from fleetflow import exceptions

NAMESPACE = 'fleetflow.drivers'


def get_driver_class(name):
    """Return the driver class registered under ``name``.

    :raises ConfigError: when no driver of that name is registered.
    """
    try:
        manager = stevedore_driver.DriverManager(
            NAMESPACE, name, invoke_on_load=False)
    except stevedore_exc.NoMatches:
        raise exceptions.ConfigError(
            'unknown driver %r (registered: %s)'
            % (name, ', '.join(sorted(available_drivers())) or 'none'))
    return manager.driver


def available_drivers():
    from stevedore import extension
    return extension.ExtensionManager(NAMESPACE).names()
