"""Sphinx directives that write fleetflow's references from its code.

``.. fleetflow-layout:: SECTION`` documents the layout keys of SECTION
(``top``, ``label``, ``provider``, ``pool`` or ``pool-label``, with
``:driver: NAME`` for a driver's own keys in that section; or the dotted
name of a schema dict, such as ``fleetflow.drivers.static.NODE``). The
table's keys, value types, required marks and defaults come from the
voluptuous schemas; the directive's content is a definition list of the
keys' descriptions (a term may name several keys, separated by commas).
A key of the schema with no description, or a description of a key the
schema does not have, is a warning (an error with ``-W``), so the page
cannot fall behind the code; and a section of a registered driver (or a
common one) that no directive documents is a warning too::

    .. fleetflow-layout:: pool
       :driver: openstack

       networks
          Networks the instances are attached to.

``.. fleetflow-commands:: MODULE.AppClass`` documents every command of a
cliff application, with cliff's own ``autoprogram-cliff`` writer, from the
commands the application registers (its entry points and its own).
"""

import importlib

from cliff import sphinxext as cliff_sphinxext
from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.parsers.rst import directives
from sphinx.util import logging
import voluptuous as v

from fleetflow import drivers
from fleetflow import layout

LOG = logging.getLogger(__name__)

SECTIONS = {
    'top': (layout.TOP, None, 'top'),
    'label': (layout.LABEL, None, 'label'),
    'provider': (layout.PROVIDER, 'provider_schema', 'provider'),
    'pool': (layout.POOL, 'pool_schema', 'pool'),
    'pool-label': (layout.POOL_LABEL, 'label_schema', 'pool-label'),
}

TYPES = {str: 'string', int: 'integer', float: 'number', bool: 'boolean',
         dict: 'mapping', list: 'list', object: 'any'}


def describe(schema):
    """A validator in words: ``integer >= 1``, ``list of string``..."""
    if isinstance(schema, type) and schema in TYPES:
        return TYPES[schema]
    if isinstance(schema, list):
        return 'list of %s' % ' or '.join(describe(s) for s in schema)
    if isinstance(schema, dict):
        names = [key.schema if isinstance(key, v.Marker) else key
                 for key in schema]
        if not all(isinstance(name, str) for name in names):
            return 'mapping of %s' % '; '.join(
                '%s: %s' % (describe(key), describe(value))
                for key, value in schema.items())
        return 'mapping (%s)' % ', '.join(names) if names else 'mapping'
    if isinstance(schema, str):
        return schema
    if isinstance(schema, v.All):
        return ', '.join(describe(s) for s in schema.validators)
    if isinstance(schema, v.Any):
        if list(schema.validators) == [int, float]:
            return 'number'
        if all(s is None or isinstance(s, str) for s in schema.validators):
            return 'one of %s' % ', '.join(
                'null' if s is None else s for s in schema.validators)
        return ' or '.join(describe(s) for s in schema.validators)
    if isinstance(schema, v.Range):
        bounds = []
        if schema.min is not None:
            bounds.append('>= %s' % schema.min)
        if schema.max is not None:
            bounds.append('<= %s' % schema.max)
        return ' and '.join(bounds)
    if isinstance(schema, v.Length):
        return ' and '.join('%s %s' % (word, bound) for word, bound in (
            ('at least', schema.min), ('at most', schema.max))
            if bound is not None)
    if isinstance(schema, v.In):
        return 'one of %s' % ', '.join(str(c) for c in schema.container)
    if isinstance(schema, v.Match):
        return 'matching %s' % schema.pattern.pattern
    if isinstance(schema, v.Coerce):
        return TYPES.get(schema.type, schema.type.__name__)
    if getattr(schema, '__name__', None) == 'refuse':
        # fleetflow.layout.unsupported(): nodepool's key, refused
        return 'refused'
    if callable(schema):
        doc = (schema.__doc__ or '').strip().split('\n')[0]
        return doc.rstrip('.') or schema.__name__
    return str(schema)


def schema_keys(schema, defaults):
    """``[(key, value in words, required, default)]`` of a schema dict.

    A required key that names several (``flavor-name or min-ram``) is
    a rule, not a key: it is returned as ``(None, its name, True, None)``.
    """
    rows = []
    for marker, value in schema.items():
        name = marker.schema if isinstance(marker, v.Marker) else marker
        required = isinstance(marker, v.Required)
        if not isinstance(name, str):
            rows.append((None, str(name), required, None))
            continue
        default = defaults.get(name)
        if isinstance(marker, v.Marker) and \
                marker.default is not v.UNDEFINED:
            default = marker.default()
        rows.append((name, describe(value), required, default))
    return rows


class LayoutKeys(Directive):
    """The ``fleetflow-layout`` directive (see the module)."""

    required_arguments = 1
    has_content = True
    option_spec = {'driver': directives.unchanged}

    def schema(self):
        section = self.arguments[0]
        driver = self.options.get('driver')
        if section not in SECTIONS:
            module, _, name = section.rpartition('.')
            return getattr(importlib.import_module(module), name), {}
        common, attribute, kind = SECTIONS[section]
        if driver is None:
            return common, layout.DEFAULTS.get(kind, {})
        return getattr(drivers.get_driver_class(driver), attribute), {}

    def descriptions(self):
        """``{key: [nodes]}`` from the content's definition list."""
        holder = nodes.container()
        self.state.nested_parse(self.content, self.content_offset, holder)
        found = {}
        for item in holder.findall(nodes.definition_list_item):
            term = item.next_node(nodes.term).astext()
            for key in term.split(','):
                found[key.strip()] = item.next_node(nodes.definition).children
        return found

    def run(self):
        env = self.state.document.settings.env
        documented = getattr(env, 'fleetflow_layout', {})
        env.fleetflow_layout = documented
        documented.setdefault(env.docname, set()).add(
            (self.options.get('driver'), self.arguments[0]))
        schema, defaults = self.schema()
        described = self.descriptions()
        problems = []
        table_rows = []
        rules = []
        for key, value, required, default in schema_keys(schema, defaults):
            if key is None:
                rules.append(value)
                continue
            if key not in described:
                problems.append('layout key %r (%s) is not described'
                                % (key, self.arguments[0]))
            table_rows.append((key, value, required, default,
                               described.pop(key, [])))
        for key in described:
            problems.append('%r is described but is no layout key of %s'
                            % (key, self.arguments[0]))
        result = [self._table(table_rows)]
        for rule in rules:
            para = nodes.paragraph()
            para += nodes.strong(text='Required: ')
            para += nodes.Text('at least one of %s.' % rule)
            result.append(para)
        for problem in problems:
            result.append(self.state.document.reporter.warning(
                problem, line=self.lineno))
        return result

    @staticmethod
    def _table(rows):
        table = nodes.table(classes=['fleetflow-layout'])
        group = nodes.tgroup(cols=3)
        table += group
        for width in (22, 26, 52):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        head += _row([nodes.paragraph(text=text)
                      for text in ('Key', 'Value', 'Description')])
        body = nodes.tbody()
        group += body
        for key, value, required, default, description in rows:
            key_cell = nodes.paragraph()
            key_cell += nodes.literal(text=key)
            value_text = value
            if required:
                value_text += '; required'
            if default not in (None, []):
                value_text += '; default %s' % (
                    str(default).lower() if isinstance(default, bool)
                    else default)
            body += _row([key_cell, nodes.paragraph(text=value_text)]
                         + [[child.deepcopy() for child in description]])
        return table


def _row(cells):
    row = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        if isinstance(cell, list):
            entry.extend(cell)
        else:
            entry += cell
        row += entry
    return row


class CliffCommands(cliff_sphinxext.AutoprogramCliffDirective):
    """The ``fleetflow-commands`` directive: every command of an app."""

    def run(self):
        self.env = self.state.document.settings.env
        app = self._load_app()
        if app is None:
            raise self.error('%s is not a cliff application'
                             % self.arguments[0])
        manager = app.command_manager
        commands = {name: self._load_command(manager, name)
                    for name in sorted(manager.commands)
                    if name != 'help' and name != 'complete'}
        return self._generate_command_nodes(commands, app.NAME)


def undocumented_sections(documented):
    """``(driver, section)`` with layout keys that no directive showed."""
    wanted = {(None, section) for section in SECTIONS}
    for name in drivers.available_drivers():
        driver_class = drivers.get_driver_class(name)
        for section, (_common, attribute, _kind) in SECTIONS.items():
            if attribute and getattr(driver_class, attribute):
                wanted.add((name, section))
    return sorted(wanted - documented, key=str)


def _check_sections(app, env):
    documented = set()
    for sections in getattr(env, 'fleetflow_layout', {}).values():
        documented |= sections
    for driver, section in undocumented_sections(documented):
        LOG.warning('the layout reference has no "fleetflow-layout:: %s"%s '
                    'section', section,
                    ' with ":driver: %s"' % driver if driver else '')


def _purge(app, env, docname):
    getattr(env, 'fleetflow_layout', {}).pop(docname, None)


def setup(app):
    app.setup_extension('cliff.sphinxext')
    app.add_directive('fleetflow-layout', LayoutKeys)
    app.add_directive('fleetflow-commands', CliffCommands)
    app.connect('env-check-consistency', _check_sections)
    app.connect('env-purge-doc', _purge)
    return {'parallel_read_safe': False, 'parallel_write_safe': True}
