"""fleetflow's console scripts."""

from importlib import metadata


def version():
    """fleetflow's installed version, as pbr recorded it."""
    try:
        return metadata.version('fleetflow')
    except metadata.PackageNotFoundError:
        return 'unknown'


def add_version_argument(parser):
    """``--version``: print ``PROG VERSION`` and exit 0."""
    parser.add_argument('--version', action='version',
                        version='%(prog)s ' + version())
