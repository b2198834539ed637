"""The layout file: labels, providers and pools in nodepool's YAML shape."""

import voluptuous as v
import yaml

from fleetflow import drivers
from fleetflow import exceptions

POSITIVE = v.All(int, v.Range(min=1))
NON_NEGATIVE = v.All(int, v.Range(min=0))
SECONDS = v.All(v.Any(int, float), v.Range(min=0))

LABEL = {
    v.Required('name'): str,
    'min-ready': NON_NEGATIVE,
    'max-ready-age': NON_NEGATIVE,
}

POOL_LABEL = {
    v.Required('name'): str,
    'username': str,
    'connection-type': v.Any('ssh', 'network_cli', 'winrm'),
    'connection-port': v.All(int, v.Range(min=1, max=65535)),
}

POOL = {
    v.Required('name'): str,
    'max-servers': NON_NEGATIVE,
    'max-cores': NON_NEGATIVE,
    'max-ram': NON_NEGATIVE,
    'host-key-checking': bool,
    'labels': [dict],
}

PROVIDER = {
    v.Required('name'): str,
    v.Required('driver'): str,
    'launch-retries': POSITIVE,
    'launch-timeout': SECONDS,
    'boot-timeout': SECONDS,
    'rate': SECONDS,
    'pools': [dict],
}

TOP = v.Schema({
    'labels': [LABEL],
    'providers': [v.Schema({v.Required('name'): str,
                            v.Required('driver'): str},
                           extra=v.ALLOW_EXTRA)],
})

DEFAULTS = {
    'label': {'min-ready': 0, 'max-ready-age': 0},
    'provider': {'launch-retries': 3, 'launch-timeout': 3600,
                 'boot-timeout': 60, 'rate': 0, 'pools': []},
    'pool': {'host-key-checking': True, 'labels': []},
    'pool-label': {'connection-type': 'ssh', 'connection-port': 22},
}


def _format_path(path):
    text = ''
    for part in path:
        text += '[%d]' % part if isinstance(part, int) else '.%s' % part
    return text.lstrip('.')


def _errors(error, prefix=()):
    errors = error.errors if isinstance(error, v.MultipleInvalid) else [error]
    return ['%s: %s' % (_format_path(list(prefix) + e.path) or '(top)',
                        e.msg) for e in errors]


def _with_defaults(kind, entry):
    return {**DEFAULTS[kind], **entry}


class Layout:
    """A validated layout.

    ``labels`` maps a label name to its entry; ``providers`` maps a provider
    name to its entry, whose ``pools`` list holds pool entries, each with its
    ``labels``. Defaults are filled in.
    """

    def __init__(self, data, source='<layout>'):
        self.source = source
        self.labels, self.providers = self._validate(data or {})

    def _validate(self, data):
        problems = []
        try:
            data = TOP(data)
        except v.Invalid as e:
            raise exceptions.ConfigError(
                '%s: %s' % (self.source, '; '.join(_errors(e))))
        labels = {}
        for label in data.get('labels', []):
            labels[label['name']] = _with_defaults('label', label)
        providers = {}
        for index, provider in enumerate(data.get('providers', [])):
            where = ('providers', index)
            try:
                driver_class = drivers.get_driver_class(provider['driver'])
            except exceptions.ConfigError as e:
                problems.append('%s: %s' % (_format_path(where + ('driver',)),
                                            e))
                continue
            try:
                providers[provider['name']] = self._validate_provider(
                    provider, driver_class, labels, where)
            except v.Invalid as e:
                problems.extend(_errors(e))
        if problems:
            raise exceptions.ConfigError(
                '%s: %s' % (self.source, '; '.join(problems)))
        return labels, providers

    @staticmethod
    def _validate_provider(provider, driver_class, labels, where):
        def checked(schema, extra, entry, path):
            try:
                return v.Schema({**schema, **extra})(entry)
            except v.Invalid as e:
                raise v.MultipleInvalid([
                    v.Invalid(err.msg, list(path) + err.path)
                    for err in getattr(e, 'errors', [e])])

        provider = _with_defaults('provider', checked(
            PROVIDER, driver_class.provider_schema, provider, where))
        provider['pools'] = [
            _with_defaults('pool', checked(
                POOL, driver_class.pool_schema, pool,
                where + ('pools', p)))
            for p, pool in enumerate(provider['pools'])]
        for p, pool in enumerate(provider['pools']):
            pool_labels = []
            for i, label in enumerate(pool['labels']):
                path = where + ('pools', p, 'labels', i)
                label = _with_defaults('pool-label', checked(
                    POOL_LABEL, driver_class.label_schema, label, path))
                if label['name'] not in labels:
                    raise v.MultipleInvalid([v.Invalid(
                        'label %r is not defined in the top-level labels'
                        % label['name'], list(path) + ['name'])])
                pool_labels.append(label)
            pool['labels'] = pool_labels
        provider['driver-class'] = driver_class
        return provider

    def pools(self):
        """Yield (provider, pool) for every pool of every provider."""
        for provider in self.providers.values():
            for pool in provider['pools']:
                yield provider, pool

    def pool_label(self, pool, label_name):
        for label in pool['labels']:
            if label['name'] == label_name:
                return label
        return None

    def pools_serving(self, label_names):
        """Yield (provider, pool) pairs that serve every label given."""
        for provider, pool in self.pools():
            served = {label['name'] for label in pool['labels']}
            if set(label_names) <= served:
                yield provider, pool

    def get_pool(self, provider_name, pool_name):
        for pool in self.providers[provider_name]['pools']:
            if pool['name'] == pool_name:
                return pool
        raise KeyError('%s/%s' % (provider_name, pool_name))


def load(path):
    """Load and validate the layout file at ``path``.

    :raises ConfigError: naming the file and each offending key.
    """
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise exceptions.ConfigError('%s: cannot read layout: %s'
                                     % (path, e.strerror))
    except yaml.YAMLError as e:
        raise exceptions.ConfigError('%s: not valid YAML: %s' % (path, e))
    return Layout(data, source=path)
