"""``fleetflow config validate``: check the configuration and the layout."""

from fleetflow.cmd.commands import base
from fleetflow.cmd import common
from fleetflow import exceptions


class ConfigValidate(base.Command):
    """Check the service configuration and the layout it names.

    Prints ``valid`` and exits 0, or prints each problem (the file, the
    section or path, and the key) and exits 1. Unknown sections and
    options in the configuration files are problems here (the services
    only warn of them).
    """

    def take_action(self, parsed_args):
        problems = self.app.config_problems
        conf = self.app.raw_conf
        if conf is not None:
            problems.extend(common.unknown_options(conf))
            try:
                common.load_layout(conf)
            except exceptions.ConfigError as e:
                problems.append(str(e))
            except Exception as e:
                # The layout_file option itself may be invalid.
                problems.append('cannot load the layout: %s' % e)
        for problem in problems:
            self.app.LOG.error(problem)
        if problems:
            return 1
        self.write('valid')
        return 0
