"""The layout file: labels, providers and pools in nodepool's YAML shape.

A nodepool launcher's layout loads as it is for the features fleetflow
has (its top level, the openstack, aws and static drivers); each key of a
feature fleetflow lacks is refused with a message saying so. Every
problem in the file is reported at once, each naming its key.
"""

import os
import re

import voluptuous as v
import yaml

from fleetflow import drivers
from fleetflow import exceptions

POSITIVE = v.All(int, v.Range(min=1))
NON_NEGATIVE = v.All(int, v.Range(min=0))
SECONDS = v.All(v.Any(int, float), v.Range(min=0))
PORT = v.All(int, v.Range(min=1, max=65535))
CONNECTION_TYPE = v.Any('ssh', 'network_cli', 'winrm')

#: Names reach file paths, server names and statsd keys.
NAME_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,127}')

#: nodepool's drivers that fleetflow does not have
NODEPOOL_DRIVERS = ('azure', 'gce', 'ibmvpc', 'kubernetes',
                    'metastatic', 'openshift', 'openshiftpods')


def _safe_name(value):
    if not NAME_RE.fullmatch(value):
        raise v.Invalid(
            '%r is not a safe name: letters, digits, ".", "_" and "-", '
            'starting with a letter or digit, at most 128' % value)
    return value


NAME = v.All(str, _safe_name)


def unsupported(why):
    """The schema value of a key fleetflow refuses: it lacks the feature."""
    message = 'not supported by fleetflow (%s)' % why

    def refuse(value):
        raise v.Invalid(message)
    refuse.__doc__ = message
    return refuse


NO_BUILDER = unsupported('it does not build or upload images: use '
                         'cloud-images')

#: accepted for nodepool's layouts and ignored (see the README)
IGNORED = object

LABEL = {
    v.Required('name'): NAME,
    'min-ready': NON_NEGATIVE,
    'max-ready-age': NON_NEGATIVE,
}

TOP = {
    'labels': list,
    'providers': list,
    'zookeeper-servers': v.All([{
        v.Required('host'): str,
        'port': PORT,
        'chroot': str,
    }], v.Length(min=1)),
    'zookeeper-tls': {v.Required('ca'): str, v.Required('cert'): str,
                      v.Required('key'): str},
    'zookeeper-timeout': v.All(v.Coerce(float), v.Range(min=0,
                                                        min_included=False)),
    'webapp': {'port': PORT, 'listen_address': str},
    'max-hold-age': NON_NEGATIVE,
    'diskimages': NO_BUILDER,
    'elements-dir': NO_BUILDER,
    'images-dir': NO_BUILDER,
    'build-log-dir': NO_BUILDER,
    'build-log-retention': NO_BUILDER,
    'tenant-resource-limits': unsupported('it has no per-tenant limits'),
}

PROVIDER = {
    v.Required('name'): NAME,
    'driver': str,
    'max-concurrency': NON_NEGATIVE,
    'priority': int,
    'launch-retries': POSITIVE,
    'launch-timeout': SECONDS,
    'boot-timeout': SECONDS,
    'rate': v.All(v.Coerce(float), v.Range(min=0)),
    'pools': [dict],
}

POOL = {
    v.Required('name'): NAME,
    'max-servers': NON_NEGATIVE,
    'max-cores': NON_NEGATIVE,
    'max-ram': NON_NEGATIVE,
    'ignore-provider-quota': bool,
    'priority': int,
    'node-attributes': dict,
    'host-key-checking': bool,
    'labels': [dict],
}

POOL_LABEL = {
    v.Required('name'): NAME,
    'username': str,
    'python-path': str,
    'shell-type': str,
    'connection-type': CONNECTION_TYPE,
    'connection-port': PORT,
    'host-key-checking': bool,
}

DEFAULTS = {
    'label': {'min-ready': 0, 'max-ready-age': 0},
    'provider': {'driver': 'openstack', 'max-concurrency': 0,
                 'priority': 100, 'launch-retries': 3,
                 'launch-timeout': 3600, 'boot-timeout': 60, 'rate': 0,
                 'pools': []},
    'pool': {'node-attributes': None, 'labels': []},
    'pool-label': {'username': None, 'python-path': 'auto',
                   'shell-type': None, 'connection-type': 'ssh'},
}

#: nodepool's default port of each connection type
DEFAULT_PORTS = {'winrm': 5986}


def _format_path(path):
    text = ''
    for part in path:
        text += '[%d]' % part if isinstance(part, int) else '.%s' % part
    return text.lstrip('.') or '(top)'


class _Problems(list):
    """The problems found so far, each a ``path: message`` line."""

    def add(self, path, message):
        self.append('%s: %s' % (_format_path(path), message))

    def add_invalid(self, error, prefix=()):
        errors = getattr(error, 'errors', [error])
        for e in errors:
            self.add(list(prefix) + e.path, e.msg)

    def check(self, schema, entry, path):
        """``entry`` validated by ``schema``, or None (problems added)."""
        try:
            return v.Schema(schema)(entry)
        except v.Invalid as e:
            self.add_invalid(e, path)
            return None

    def unique(self, entries, path, what):
        """Report names given to more than one of ``entries``."""
        seen = {}
        for index, entry in enumerate(entries):
            if entry is None:
                continue
            name = entry['name']
            if name in seen:
                self.add(path + [index, 'name'], 'duplicate %s name %r '
                         '(also %s)' % (what, name, _format_path(
                             path + [seen[name]])))
            else:
                seen[name] = index


class Layout:
    """A validated layout.

    ``labels`` maps a label name to its entry; ``providers`` maps a provider
    name to its entry, whose ``pools`` list holds pool entries, each with its
    ``labels``. Defaults are filled in, and each pool label carries what a
    node of it is reached with (``username``, ``python-path``,
    ``shell-type``, ``connection-type``, ``connection-port``,
    ``host-key-checking``), from its own keys or its driver's (an openstack
    cloud image, static hosts). ``zookeeper`` is None or
    ``{'servers': [{'host', 'port', 'chroot'}], 'tls': None or {'ca',
    'cert', 'key'}, 'timeout': seconds}``; ``max_hold_age`` is None or
    seconds.
    """

    def __init__(self, data, source='<layout>'):
        self.source = source
        problems = _Problems()
        if not data:
            problems.add([], 'the layout is empty')
        elif not isinstance(data, dict):
            problems.add([], 'the layout must be a mapping, not a %s'
                         % type(data).__name__)
        else:
            top = problems.check(TOP, data, [])
            self.zookeeper = _zookeeper(top or {})
            self.max_hold_age = (top or {}).get('max-hold-age') or None
            self.labels = self._labels(data.get('labels'), problems)
            self.providers = self._providers(data.get('providers'),
                                             problems)
        if problems:
            raise exceptions.ConfigError(
                '%s: %s' % (self.source, '; '.join(problems)))

    @staticmethod
    def _labels(entries, problems):
        if not isinstance(entries, list):
            return {}
        labels = [problems.check(LABEL, entry, ['labels', index])
                  for index, entry in enumerate(entries)]
        problems.unique(labels, ['labels'], 'label')
        return {label['name']: {**DEFAULTS['label'], **label}
                for label in labels if label is not None}

    def _providers(self, entries, problems):
        if not isinstance(entries, list):
            return {}
        providers = []
        for index, entry in enumerate(entries):
            path = ['providers', index]
            if not isinstance(entry, dict):
                problems.add(path, 'expected a dictionary')
                providers.append(None)
                continue
            providers.append(self._provider(entry, path, problems))
        problems.unique(providers, ['providers'], 'provider')
        return {provider['name']: provider for provider in providers
                if provider is not None}

    def _provider(self, entry, path, problems):
        driver_name = entry.get('driver', 'openstack')
        if not isinstance(driver_name, str):
            problems.add(path + ['driver'], 'expected str')
            return None
        try:
            driver_class = drivers.get_driver_class(driver_name)
        except exceptions.ConfigError as e:
            if driver_name in NODEPOOL_DRIVERS:
                problems.add(path + ['driver'], 'nodepool\'s %r driver is '
                             'not supported by fleetflow' % driver_name)
            else:
                problems.add(path + ['driver'], e)
            return None
        provider = problems.check({**PROVIDER, **driver_class.provider_schema},
                                  entry, path)
        if provider is None:
            # its pools are still checked, for the problems they have
            pools = entry.get('pools')
            for index, pool in enumerate(
                    pools if isinstance(pools, list) else []):
                self._pool(None, driver_class, pool, path + ['pools', index],
                           problems)
            return None
        provider = {**DEFAULTS['provider'], **provider}
        pools = [self._pool(provider, driver_class, pool,
                            path + ['pools', index], problems)
                 for index, pool in enumerate(provider['pools'])]
        problems.unique(pools, path + ['pools'], 'pool')
        provider['pools'] = [pool for pool in pools if pool is not None]
        provider['driver-class'] = driver_class
        return provider

    def _pool(self, provider, driver_class, entry, path, problems):
        """The checked and completed pool entry, or None.

        With no ``provider`` (it has problems of its own), the pool's
        labels are checked, not completed.
        """
        pool = problems.check({**POOL, **driver_class.pool_schema}, entry,
                              path)
        entries = (pool or entry).get('labels') if isinstance(
            entry, dict) else None
        labels = []
        for index, label in enumerate(
                entries if isinstance(entries, list) else []):
            where = path + ['labels', index]
            label = problems.check({**POOL_LABEL,
                                    **driver_class.label_schema},
                                   label, where)
            if label is not None and label['name'] not in self.labels:
                problems.add(where + ['name'], 'label %r is not defined in '
                             'the top-level labels' % label['name'])
            labels.append(label)
        problems.unique(labels, path + ['labels'], 'pool label')
        if provider is None or pool is None:
            return None
        pool = {**DEFAULTS['pool'], 'host-key-checking': True,
                'priority': provider['priority'], **pool,
                'labels': [label for label in labels if label is not None]}
        try:
            completed = driver_class.complete_labels(provider, pool)
        except v.Invalid as e:
            problems.add_invalid(e, path)
            return None
        listed = {label['name'] for label in pool['labels']}
        pool['labels'] = []
        for label in completed:
            if label['name'] not in self.labels.keys() | listed:
                problems.add(path, 'label %r is not defined in the '
                             'top-level labels' % label['name'])
            pool['labels'].append(_pool_label(pool, label))
        return pool

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
        """Yield (provider, pool) pairs that serve every label given.

        By priority (a lower number first), then in the layout's order.
        """
        pools = []
        for provider, pool in self.pools():
            served = {label['name'] for label in pool['labels']}
            if set(label_names) <= served:
                pools.append((provider, pool))
        pools.sort(key=lambda pair: pair[1]['priority'])
        return iter(pools)

    def get_pool(self, provider_name, pool_name):
        for pool in self.providers[provider_name]['pools']:
            if pool['name'] == pool_name:
                return pool
        raise KeyError('%s/%s' % (provider_name, pool_name))


def _pool_label(pool, label):
    """A pool label with its defaults: the pool's, then fleetflow's."""
    label = {**DEFAULTS['pool-label'],
             'host-key-checking': pool['host-key-checking'], **label}
    label.setdefault('connection-port',
                     DEFAULT_PORTS.get(label['connection-type'], 22))
    return label


def _zookeeper(top):
    servers = top.get('zookeeper-servers')
    if not servers:
        return None
    return {
        'servers': [{'host': server['host'],
                     'port': server.get('port', 2281),
                     'chroot': server.get('chroot')} for server in servers],
        'tls': top.get('zookeeper-tls'),
        'timeout': top.get('zookeeper-timeout', 10.0),
    }


class FileWatch:
    """Tells whether a file changed since it was last looked at."""

    def __init__(self, path):
        self.path = path
        self._seen = self._stat()

    def _stat(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def changed(self):
        seen, self._seen = self._seen, self._stat()
        return seen != self._seen


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


def changes(old, new):
    """What differs between two layouts, as short phrases for the log."""
    said = []
    for kind, before, after in (('label', old.labels, new.labels),
                                ('provider', old.providers, new.providers)):
        for name in sorted(set(after) - set(before)):
            said.append('%s %s added' % (kind, name))
        for name in sorted(set(before) - set(after)):
            said.append('%s %s removed' % (kind, name))
        for name in sorted(set(before) & set(after)):
            if _comparable(before[name]) != _comparable(after[name]):
                said.append('%s %s changed' % (kind, name))
    return said


def _comparable(entry):
    return {key: value for key, value in entry.items()
            if key != 'driver-class'}
