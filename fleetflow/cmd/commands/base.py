"""Base classes and column formatting of the admin CLI's commands."""

import datetime

from cliff import columns
from cliff import command
from cliff import lister
from cliff import show

from fleetflow.cmd import common


def iso(timestamp):
    """ISO 8601 in UTC (``2024-05-01T12:00:00Z``) of a ``time.time()``."""
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(
        timestamp, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


class ListColumn(columns.FormattableColumn):
    """A list: comma separated in a table, a list in JSON and YAML."""

    separator = ', '

    def human_readable(self):
        return self.separator.join(str(item) for item in self._value or [])

    def machine_readable(self):
        return list(self._value or [])


class LinesColumn(ListColumn):
    """A list shown one item a line in a table (host keys)."""

    separator = '\n'


class DictColumn(columns.FormattableColumn):
    """A dict: ``key=value, ...`` in a table, an object in JSON and YAML."""

    def human_readable(self):
        return ', '.join('%s=%s' % (key, '-' if value is None else value)
                         for key, value in (self._value or {}).items())

    def machine_readable(self):
        return dict(self._value or {})


class Command(common.Command, command.Command):
    """A command that writes text and returns its exit code."""

    def write(self, text):
        self.app.stdout.write(text + '\n')


class Lister(common.Command, lister.Lister):
    """A command that shows a table (``-f table|json|yaml|csv|value``)."""


class ShowOne(common.Command, show.ShowOne):
    """A command that shows one item; it may exit 1 after showing it."""

    failure = None

    def run(self, parsed_args):
        result = super().run(parsed_args)
        if self.failure:
            self.app.LOG.error(self.failure)
            return 1
        return result

    def fail_after_output(self, message):
        """Show the item, then report ``message`` and exit 1."""
        self.failure = message
