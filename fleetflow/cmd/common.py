"""What fleetflow's console scripts share: configuration and the cliff app.

A console script loads the service configuration and the layout with::

    from fleetflow.cmd import common

    def main(argv=None):
        conf = common.load_config(argv, 'fleetflow-launcher')
        ctx = common.make_context(conf)

:func:`load_config` parses ``--config-file`` / ``--config-dir`` (and the
default files ``/etc/fleetflow/fleetflow.conf``, ``~/.fleetflow/...``
when none is given), checks every option's value and sets up oslo.log;
:func:`make_context` loads the layout and builds the
:class:`~fleetflow.context.Context`. Either one, on a bad configuration or
layout, prints an error that names the file and the key and exits 1.
:func:`read_config` and :func:`load_layout` raise
:class:`~fleetflow.exceptions.ConfigError` instead.

:class:`App` is the base of the cliff applications ``fleetflow`` and
``fleetflow-manage``.
"""

import glob
import logging
import os
import re
import sys

from cliff import app as cliff_app
from cliff import commandmanager
from oslo_config import cfg
from oslo_log import log
import sqlalchemy.exc

from fleetflow import cmd
from fleetflow import conf as ff_conf
from fleetflow import exceptions
from fleetflow import layout as ff_layout

LOG = logging.getLogger(__name__)

PROJECT = 'fleetflow'


# Configuration

class ConfigProblems(exceptions.ConfigError):
    """One or more problems in the service configuration."""

    def __init__(self, problems):
        super().__init__('; '.join(problems))
        self.problems = list(problems)


def parse_config(argv, prog, default_config_files=None):
    """Parse ``argv`` into a new ConfigOpts with fleetflow's options.

    :returns: ``(conf, problems)``: problems are the options whose value
        in a file is not valid, each naming the file, the section and the
        key.
    :raises ConfigError: when a config file is missing or cannot be
        parsed.
    """
    conf = cfg.ConfigOpts()
    ff_conf.register_opts(conf)
    log.register_options(conf)
    try:
        conf(list(argv or []), project=PROJECT, prog=prog,
             version='%s %s' % (prog, cmd.version()),
             default_config_files=default_config_files)
    except cfg.ConfigFilesNotFoundError as e:
        raise ConfigProblems(['%s: config file not found or not readable'
                              % path for path in e.config_files])
    except cfg.ConfigFilesPermissionDeniedError as e:
        raise ConfigProblems(['%s: permission denied' % path
                              for path in e.config_files])
    except cfg.ConfigFileParseError as e:
        raise ConfigProblems(['%s: cannot parse: %s'
                              % (e.config_file, e.msg)])
    except cfg.Error as e:
        raise ConfigProblems([str(e)])
    return conf, invalid_values(conf)


def read_config(argv, prog, default_config_files=None):
    """Parse ``argv``; raise :class:`ConfigError` on any problem."""
    conf, problems = parse_config(argv, prog, default_config_files)
    if problems:
        raise ConfigProblems(problems)
    return conf


def config_files(conf):
    """The files ``conf`` was read from, in the order they were read."""
    files = list(conf.config_file or [])
    for directory in conf.config_dir or []:
        files.extend(sorted(glob.glob(os.path.join(directory, '*.conf'))))
    return files


def _file_values(conf):
    """``[(path, {section: {key: [raw values]}})]`` of every file read."""
    parsed = []
    for path in config_files(conf):
        sections = {}
        try:
            cfg.ConfigParser(path, sections).parse()
        except (OSError, cfg.ParseError):
            continue
        parsed.append((path, sections))
    return parsed


def _where(files, group, name):
    """The file that set ``[group] name`` last, and the raw value."""
    section = group or 'DEFAULT'
    for path, sections in reversed(files):
        values = sections.get(section, {}).get(name)
        if values:
            return path, values[-1]
    return None, None


def _value_problem(files, group, name, error):
    match = re.search(r'is not valid: (.*)$', str(error), re.S)
    reason = match.group(1) if match else str(error)
    path, raw = _where(files, group, name)
    key = '[%s] %s' % (group or 'DEFAULT', name)
    if path is None:
        return '%s: %s' % (key, reason)
    return '%s: %s: invalid value %r: %s' % (path, key, raw, reason)


def invalid_values(conf):
    """Problems of every registered option whose value is not valid."""
    files = _file_values(conf)
    problems = []

    def check(getter, group, name):
        try:
            return getter(name)
        except cfg.Error as e:
            problems.append(_value_problem(files, group, name, e))

    for name in sorted(conf):
        value = check(conf.__getitem__, None, name)
        if isinstance(value, cfg.ConfigOpts.GroupAttr):
            for opt in sorted(value):
                check(value.__getitem__, name, opt)
    return problems


def unknown_options(conf):
    """Sections and keys of the files read that no option is known by."""
    known = {}
    for name in conf:
        try:
            value = conf[name]
        except cfg.Error:
            continue
        if isinstance(value, cfg.ConfigOpts.GroupAttr):
            known[name] = set(value)
        else:
            known.setdefault('DEFAULT', set()).add(name)
    problems = []
    for path, sections in _file_values(conf):
        for section, values in sections.items():
            if section not in known:
                problems.append('%s: [%s]: unknown section' % (path, section))
                continue
            for key in values:
                if key not in known[section]:
                    problems.append('%s: [%s] %s: unknown option'
                                    % (path, section, key))
    return problems


def load_layout(conf):
    """Load and validate the layout named by ``[launcher] layout_file``.

    :raises ConfigError: naming the file and each offending key.
    """
    path = conf.launcher.layout_file
    if not os.path.exists(path):
        raise exceptions.ConfigError(
            '%s: layout file not found (set [launcher] layout_file)' % path)
    return ff_layout.load(path)


def fail(prog, message):
    """Print ``prog: error: message`` on stderr and exit 1."""
    for line in str(message).split('\n'):
        print('%s: error: %s' % (prog, line), file=sys.stderr)
    sys.exit(1)


def load_config(argv, prog, setup_logging=True, default_config_files=None):
    """The service configuration for a console script.

    Parses ``argv`` (``sys.argv[1:]`` when None), checks every option,
    warns of unknown ones and, with ``setup_logging``, sets up oslo.log.
    On a bad configuration it prints the problems (file, section and key)
    and exits 1.
    """
    if argv is None:
        argv = sys.argv[1:]
    try:
        conf = read_config(argv, prog, default_config_files)
    except ConfigProblems as e:
        fail(prog, '\n'.join(e.problems))
    except exceptions.ConfigError as e:
        fail(prog, e)
    if setup_logging:
        log.setup(conf, PROJECT)
    for problem in unknown_options(conf):
        LOG.warning('%s (ignored)', problem)
    return conf


def make_context(conf, layout=None, prog=None):
    """A :class:`~fleetflow.context.Context` on ``conf`` and its layout.

    Loads the layout unless given; on a bad layout it prints the problems
    and exits 1.
    """
    from fleetflow import context
    try:
        if layout is None:
            layout = load_layout(conf)
        return context.Context(conf, layout)
    except exceptions.ConfigError as e:
        fail(prog or os.path.basename(sys.argv[0]), e)


def safe_url(url):
    """A database URL without its password."""
    return sqlalchemy.engine.make_url(url).render_as_string(
        hide_password=True)


def database_error(conf, error):
    """A one-line message for a database error, with a hint."""
    text = str(getattr(error, 'orig', None) or error).strip()
    text = text.splitlines()[0] if text else type(error).__name__
    try:
        url = safe_url(ff_conf.database_url(conf))
    except Exception:
        url = '(unknown)'
    if re.search(r'no such table|relation .* does not exist|'
                 r'table .* doesn\'t exist', text, re.I):
        return ('database %s has no fleetflow tables (%s): run '
                '"fleetflow-manage db sync"' % (url, text))
    if 'unable to open database file' in text:
        path = sqlalchemy.engine.make_url(url).database or ''
        directory = os.path.dirname(os.path.abspath(path))
        why = ('its directory %s does not exist' % directory
               if not os.path.isdir(directory) else text)
        return ('cannot open database file %s: %s (check [DEFAULT] '
                'state_path or [database] connection; "fleetflow-manage '
                'db sync" creates the file)' % (path, why))
    return 'database %s: %s' % (url, text)


def schema_problem(conf, current, head):
    """Why a database at revision ``current`` cannot serve, or None."""
    url = safe_url(ff_conf.database_url(conf))
    if current is None:
        return ('database %s has no fleetflow tables: run "fleetflow-manage '
                'db sync"' % url)
    if current != head:
        return ('database %s is at revision %s, this fleetflow needs %s: run '
                '"fleetflow-manage db sync"' % (url, current, head))
    return None


# The cliff application

class _Formatter(logging.Formatter):
    """``error: message``: the level in lower case, then the message."""

    def format(self, record):
        return '%s: %s' % (record.levelname.lower(),
                           super().format(record))


class Command:
    """Mixin of fleetflow's cliff commands: database errors in one line."""

    def run(self, parsed_args):
        try:
            return super().run(parsed_args)
        except ConfigProblems as e:
            for problem in e.problems:
                self.app.LOG.error(problem)
            return 1
        except sqlalchemy.exc.SQLAlchemyError as e:
            raise exceptions.FleetflowError(
                database_error(self.app.raw_conf, e)) from None


class App(cliff_app.App):
    """A cliff app that reads fleetflow's configuration.

    ``--config-file`` and ``--config-dir`` are global options. The
    configuration is read before the command runs; the client, the layout
    and the context are made the first time a command asks for them.
    Commands come from ``commands`` and from the entry point ``namespace``
    (so that plugins can add some).
    """

    DEFAULT_VERBOSE_LEVEL = 0

    def __init__(self, prog, description, namespace, commands,
                 stdin=None, stdout=None, stderr=None):
        self.NAME = prog
        manager = commandmanager.CommandManager(namespace)
        for name, command in commands.items():
            manager.add_command(name, command)
        super().__init__(description=description, version=cmd.version(),
                         command_manager=manager, stdin=stdin,
                         stdout=stdout, stderr=stderr, deferred_help=True)
        self._conf = None
        self._config_problems = []
        self._client = None
        self._layout = None
        self._context = None
        self._log_handlers = []
        self._log_levels = {}

    def build_option_parser(self, description, version,
                            argparse_kwargs=None):
        parser = super().build_option_parser(
            description, version, dict(argparse_kwargs or {},
                                       prog=self.NAME,
                                       conflict_handler='resolve'))
        # cliff names the program after sys.argv[0]; name it as installed.
        cmd.add_version_argument(parser)
        parser.add_argument(
            '--config-file', action='append', dest='config_files',
            metavar='PATH', default=[],
            help='fleetflow configuration file; may be repeated (default: '
                 'fleetflow.conf in ~/.fleetflow, ~, /etc/fleetflow, '
                 '/etc).')
        parser.add_argument(
            '--config-dir', action='append', dest='config_dirs',
            metavar='DIR', default=[],
            help='Directory whose .conf files are read after the config '
                 'files.')
        return parser

    def configure_logging(self):
        root = logging.getLogger()
        before = set(root.handlers)
        self._log_levels = {'': root.level, 'stevedore': logging.getLogger(
            'stevedore').level}
        super().configure_logging()
        if self.options.verbose_level < 2:
            # stevedore warns of every entry point it cannot load; the
            # layout reports an unknown driver itself.
            logging.getLogger('stevedore').setLevel(logging.ERROR)
        for handler in logging.getLogger().handlers:
            if handler not in before:
                self._log_handlers.append(handler)
                if getattr(handler, 'stream', None) is self.stderr:
                    handler.setFormatter(_Formatter('%(message)s'))

    def run(self, argv):
        try:
            return super().run(argv)
        finally:
            self.close()

    def close(self):
        """Release connections and the log handlers this run added."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._context is not None:
            self._context.engine.dispose()
            self._context = None
        root = logging.getLogger()
        for handler in self._log_handlers:
            root.removeHandler(handler)
        self._log_handlers = []
        for name, level in self._log_levels.items():
            logging.getLogger(name).setLevel(level)
        self._log_levels = {}

    def initialize_app(self, argv):
        args = []
        for path in self.options.config_files:
            args += ['--config-file', path]
        for path in self.options.config_dirs:
            args += ['--config-dir', path]
        try:
            self._conf, self._config_problems = parse_config(args,
                                                             self.NAME)
        except ConfigProblems as e:
            self._config_problems = e.problems

    # What commands use

    @property
    def config_problems(self):
        """Problems found reading the configuration (may be empty)."""
        return list(self._config_problems)

    @property
    def conf(self):
        """The configuration; ConfigError if it is not valid."""
        if self._config_problems:
            raise ConfigProblems(self._config_problems)
        return self._conf

    @property
    def raw_conf(self):
        """The configuration as parsed, even with invalid values."""
        return self._conf

    @property
    def client(self):
        if self._client is None:
            from fleetflow import client
            self._client = client.Client(self.conf)
        return self._client

    @property
    def layout(self):
        if self._layout is None:
            self._layout = load_layout(self.conf)
        return self._layout

    @property
    def context(self):
        if self._context is None:
            from fleetflow import context
            self._context = context.Context(self.conf, self.layout)
        return self._context
