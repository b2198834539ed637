"""A simulated OpenStack cloud on loopback, for the openstack driver's tests.

:class:`FakeCloud` is an HTTP server (a ``ThreadingHTTPServer`` on
127.0.0.1, port 0) that speaks just enough of Keystone v3, Nova, Glance v2,
Neutron and Cinder v3 for openstacksdk and fleetflow's openstack driver:

- Keystone: version discovery and ``POST /v3/auth/tokens`` with a service
  catalog that points every service at this server;
- Nova: servers (create, list detail, get, delete, metadata), flavors,
  limits, ``os-availability-zone``; a server goes BUILD -> ACTIVE after
  ``build_delay`` seconds, and quotas are enforced;
- Glance v2: image get and list;
- Neutron: networks, ports and floating IPs;
- Cinder v3: volumes (list detail, get, metadata, delete), made by Nova for
  boot-from-volume servers.

State lives in memory. ``calls`` counts the requests per route name (for
instance ``calls['compute.servers.detail']``). Faults are injected with
:meth:`FakeCloud.inject` (an HTTP error answer for a route) and
:meth:`FakeCloud.fail_next_servers` (servers that go to ERROR with a fault).
"""

import base64
import collections
import http.server
import ipaddress
import itertools
import json
import re
import socket
import threading
import time
import urllib.parse
import uuid

USERNAME = 'fleetflow-user'
PASSWORD = 'fleetflow-secret'
PROJECT_ID = 'f1ee7f10000000000000000000000001'
REGION = 'RegionOne'
COMPUTE_MAX_VERSION = '2.79'
VOLUME_MAX_VERSION = '3.70'

DEFAULT_FLAVORS = (
    # id, name, vcpus, ram (MiB), disk (GiB)
    ('1', 'm1.tiny', 1, 512, 1),
    ('2', 'm1.small', 1, 2048, 20),
    ('3', 'm1.medium', 2, 4096, 40),
    ('4', 'm1.large', 4, 8192, 80),
    ('5', 'm1.xlarge', 8, 16384, 160),
)


class FakeError(Exception):
    """An HTTP error answer."""

    def __init__(self, status, message, headers=None, key=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.key = key


class Injection:
    def __init__(self, route, status, message, headers, times, key):
        self.route = route
        self.status = status
        self.message = message
        self.headers = headers
        self.times = times
        self.key = key


def _now_iso(when=None):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(when))


class FakeCloud:
    """One simulated cloud with one project.

    :param build_delay: seconds a new server stays in BUILD.
    :param delete_delay: seconds a deleted server stays listed (deleting).
    :param max_instances: Nova's ``maxTotalInstances`` (-1: unlimited).
    :param max_cores: Nova's ``maxTotalCores``.
    :param max_ram: Nova's ``maxTotalRAMSize`` (MiB).
    """

    def __init__(self, build_delay=0.0, delete_delay=0.0, max_instances=10,
                 max_cores=20, max_ram=51200):
        self.build_delay = build_delay
        self.delete_delay = delete_delay
        self.max_instances = max_instances
        self.max_cores = max_cores
        self.max_ram = max_ram
        self.lock = threading.RLock()
        self.calls = collections.Counter()
        self.requests = []
        self.tokens_issued = 0
        self.tokens = set()
        #: when false, Nova leaves boot volumes behind (available) on delete
        self.delete_volumes_on_termination = True
        #: servers per page of a server listing (None: all in one page)
        self.page_size = None
        self._seq = itertools.count()
        self.azs = ['nova', 'az2']
        self.flavors = {
            fid: {'id': fid, 'name': name, 'vcpus': vcpus, 'ram': ram,
                  'disk': disk, 'OS-FLV-EXT-DATA:ephemeral': 0, 'swap': 0,
                  'rxtx_factor': 1.0, 'OS-FLV-DISABLED:disabled': False,
                  'os-flavor-access:is_public': True}
            for fid, name, vcpus, ram, disk in DEFAULT_FLAVORS}
        self.servers = {}
        self.images = {}
        self.networks = {}
        self.subnets = {}
        self.ports = {}
        self.floating_ips = {}
        self.volumes = {}
        self._injections = []
        self._server_faults = collections.deque()
        self._ip_counter = itertools.count(10)
        self.add_network('private', '10.0.0.0/24', v6='fd00:10::/64')
        self.add_network('public', '203.0.113.0/24', v6='2001:db8:1::/64',
                         shared=True)
        self.add_network('ext-net', '172.24.4.0/24', external=True)
        self.add_image('cirros', status='active')
        self._httpd = None
        self._thread = None
        self._connections = set()

    # -- lifecycle ---------------------------------------------------------

    def start(self):
        handler = type('Handler', (_Handler,), {'cloud': self})
        self._httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                                      handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={'poll_interval': 0.05},
                                        name='fake-openstack', daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving, and drop the connections clients keep open."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self._httpd = None
        with self.lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def url(self):
        host, port = self._httpd.server_address[:2]
        return 'http://%s:%d' % (host, port)

    @property
    def auth_url(self):
        return self.url + '/identity/v3'

    def clouds_yaml(self, cloud_name='fake'):
        """The text of a clouds.yaml with one entry for this cloud."""
        return (
            'clouds:\n'
            '  %(name)s:\n'
            '    auth:\n'
            '      auth_url: %(auth_url)s\n'
            '      username: %(user)s\n'
            '      password: %(password)s\n'
            '      project_name: fleetflow\n'
            '      user_domain_name: Default\n'
            '      project_domain_name: Default\n'
            '    identity_api_version: 3\n'
            '    region_name: %(region)s\n'
            % {'name': cloud_name, 'auth_url': self.auth_url,
               'user': USERNAME, 'password': PASSWORD, 'region': REGION})

    # -- switches ------------------------------------------------------------

    def inject(self, route, status, message, headers=None, times=1,
               key=None):
        """Answer the next ``times`` requests of ``route`` with an error.

        ``route`` is a route name (see :data:`ROUTES`), ``key`` the JSON key
        of the error body (Nova's style: ``forbidden``, ``overLimit``...).
        """
        with self.lock:
            self._injections.append(Injection(route, status, message,
                                              headers or {}, times, key))

    def fail_next_servers(self, message, count=1, code=500):
        """The next ``count`` servers go to ERROR with this fault."""
        with self.lock:
            for _ in range(count):
                self._server_faults.append({'message': message,
                                            'code': code})

    def reset_calls(self):
        with self.lock:
            self.calls.clear()
            del self.requests[:]

    # -- state helpers -------------------------------------------------------

    def add_network(self, name, cidr, v6=None, external=False, shared=False):
        net_id = str(uuid.uuid4())
        subnets = []
        for block in filter(None, (cidr, v6)):
            subnet_id = str(uuid.uuid4())
            network = ipaddress.ip_network(block)
            self.subnets[subnet_id] = {
                'id': subnet_id, 'network_id': net_id, 'cidr': block,
                'ip_version': network.version, 'name': '%s-v%d' % (
                    name, network.version)}
            subnets.append(subnet_id)
        self.networks[net_id] = {
            'id': net_id, 'name': name, 'status': 'ACTIVE',
            'subnets': subnets, 'router:external': external,
            'shared': shared, 'admin_state_up': True,
            'project_id': PROJECT_ID, 'tenant_id': PROJECT_ID,
            'description': '', 'tags': []}
        return net_id

    def network_by_name(self, name):
        for net in self.networks.values():
            if net['name'] == name:
                return net
        raise KeyError(name)

    def add_image(self, name, status='queued', **properties):
        image_id = str(uuid.uuid4())
        image = {'id': image_id, 'name': name, 'status': status,
                 'visibility': 'private', 'protected': False,
                 'disk_format': 'qcow2', 'container_format': 'bare',
                 'owner': PROJECT_ID, 'size': None, 'checksum': None,
                 'os_hash_algo': None, 'os_hash_value': None,
                 'min_disk': 0, 'min_ram': 0, 'tags': [],
                 'created_at': _now_iso(), 'updated_at': _now_iso(),
                 'self': '/v2/images/%s' % image_id,
                 'file': '/v2/images/%s/file' % image_id,
                 'schema': '/v2/schemas/image'}
        image.update(properties)
        self.images[image_id] = image
        return image

    def add_server(self, name, metadata=None, flavor_id='2',
                   status='ACTIVE'):
        """Make a server directly (one fleetflow did not ask for)."""
        with self.lock:
            server = self._new_server({
                'name': name, 'flavorRef': flavor_id,
                'imageRef': next(iter(self.images)),
                'metadata': metadata or {}, 'networks': 'auto'},
                check_quota=False)
            server['_ready_at'] = 0
            if status != 'ACTIVE':
                server['status'] = status
            self._advance()
            return server

    def _next_ip(self, subnet):
        net = ipaddress.ip_network(subnet['cidr'])
        return str(net[next(self._ip_counter)])

    def _fixed_ips(self, net_id):
        return [{'subnet_id': sid,
                 'ip_address': self._next_ip(self.subnets[sid])}
                for sid in self.networks[net_id]['subnets']]

    # -- servers ---------------------------------------------------------

    def _usage(self):
        instances = cores = ram = 0
        for server in self.servers.values():
            flavor = server['flavor']
            instances += 1
            cores += flavor['vcpus']
            ram += flavor['ram']
        return instances, cores, ram

    def _check_quota(self, flavor):
        instances, cores, ram = self._usage()
        for resource, used, want, limit in (
                ('instances', instances, 1, self.max_instances),
                ('cores', cores, flavor['vcpus'], self.max_cores),
                ('ram', ram, flavor['ram'], self.max_ram)):
            if limit >= 0 and used + want > limit:
                raise FakeError(
                    403, 'Quota exceeded for %s: Requested %d, but already '
                    'used %d of %d %s' % (resource, want, used, limit,
                                          resource), key='forbidden')

    def _new_server(self, body, check_quota=True):
        flavor_ref = str(body.get('flavorRef', ''))
        flavor = self.flavors.get(flavor_ref)
        if flavor is None:
            raise FakeError(400, 'Flavor %s could not be found.'
                            % flavor_ref, key='badRequest')
        if check_quota:
            self._check_quota(flavor)
        bdm = body.get('block_device_mapping_v2') or []
        image_ref = body.get('imageRef') or None
        if image_ref is None and not bdm:
            raise FakeError(400, 'imageRef or block_device_mapping_v2 is '
                            'required', key='badRequest')
        for ref in [image_ref] + [b.get('uuid') for b in bdm
                                  if b.get('source_type') == 'image']:
            if ref is not None and ref not in self.images:
                raise FakeError(400, 'Image %s could not be found.' % ref,
                                key='badRequest')
        az = body.get('availability_zone')
        if az is not None and az not in self.azs:
            raise FakeError(400, 'The requested availability zone is not '
                            'available', key='badRequest')
        metadata = body.get('metadata') or {}
        for key, value in metadata.items():
            if not isinstance(value, str) or len(value) > 255 or \
                    len(key) > 255:
                raise FakeError(400, 'Invalid metadata %r' % key,
                                key='badRequest')
        if body.get('user_data'):
            base64.b64decode(body['user_data'], validate=True)
        networks = body.get('networks')
        if networks is None:
            raise FakeError(400, 'networks is required (microversion '
                            '>= 2.37)', key='badRequest')
        nics = []
        if networks == 'auto':
            nics.append({'network_id': self.network_by_name('private')['id']})
        elif networks != 'none':
            for nic in networks:
                if 'port' in nic:
                    port = self.ports.get(nic['port'])
                    if port is None:
                        raise FakeError(400, 'Port %s not found' %
                                        nic['port'], key='badRequest')
                    if port['device_id']:
                        raise FakeError(409, 'Port %s is in use' % port['id'],
                                        key='conflictingRequest')
                    nics.append({'port_id': port['id'],
                                 'network_id': port['network_id']})
                elif nic.get('uuid') in self.networks:
                    nics.append({'network_id': nic['uuid']})
                else:
                    raise FakeError(400, 'Network %s could not be found.'
                                    % nic.get('uuid'), key='badRequest')
        server_id = str(uuid.uuid4())
        now = time.time()
        server = {
            'id': server_id, 'name': body.get('name'),
            'status': 'BUILD', 'OS-EXT-STS:task_state': 'scheduling',
            'OS-EXT-STS:vm_state': 'building',
            'OS-EXT-STS:power_state': 0,
            'OS-EXT-AZ:availability_zone': az or self.azs[0],
            'metadata': dict(metadata), 'addresses': {},
            'flavor': {'original_name': flavor['name'],
                       'vcpus': flavor['vcpus'], 'ram': flavor['ram'],
                       'disk': flavor['disk'], 'ephemeral': 0, 'swap': 0,
                       'extra_specs': {}},
            'image': ({'id': image_ref} if image_ref else ''),
            'key_name': body.get('key_name'),
            'user_id': 'fleetflow-user-id', 'tenant_id': PROJECT_ID,
            'created': _now_iso(now), 'updated': _now_iso(now),
            'hostId': '', 'accessIPv4': '', 'accessIPv6': '',
            'config_drive': 'True' if body.get('config_drive') else '',
            'progress': 0, 'locked': False,
            'description': None, 'tags': [],
            'os-extended-volumes:volumes_attached': [],
            'security_groups': (body.get('security_groups')
                                or [{'name': 'default'}]),
            'links': [{'rel': 'self', 'href': self.url +
                       '/compute/v2.1/servers/' + server_id}],
            '_ready_at': now + self.build_delay, '_seq': next(self._seq),
            '_deleted_at': None, '_nics': nics,
            '_user_data': body.get('user_data'),
            '_fault': (self._server_faults.popleft()
                       if self._server_faults else None),
        }
        for nic in nics:
            if 'port_id' in nic:
                self.ports[nic['port_id']]['device_id'] = server_id
                self.ports[nic['port_id']]['device_owner'] = 'compute:nova'
        for mapping in bdm:
            if mapping.get('destination_type') != 'volume':
                continue
            if mapping.get('source_type') == 'image':
                volume = self._new_volume(size=int(mapping.get(
                    'volume_size') or 1), image_id=mapping.get('uuid'))
            else:
                volume = self.volumes[mapping['uuid']]
            volume['status'] = 'in-use'
            volume['attachments'] = [{'server_id': server_id,
                                      'volume_id': volume['id'],
                                      'attachment_id': str(uuid.uuid4()),
                                      'device': '/dev/vda'}]
            server['os-extended-volumes:volumes_attached'].append({
                'id': volume['id'],
                'delete_on_termination': bool(
                    mapping.get('delete_on_termination', False))})
        self.servers[server_id] = server
        return server

    def _advance(self):
        """Move servers along by the clock: BUILD -> ACTIVE, deleted."""
        now = time.time()
        for server_id, server in list(self.servers.items()):
            if server['_deleted_at'] is not None:
                if now >= server['_deleted_at']:
                    self._remove_server(server)
                continue
            if server['status'] == 'BUILD' and now >= server['_ready_at']:
                fault = server['_fault']
                if fault is not None:
                    server['status'] = 'ERROR'
                    server['OS-EXT-STS:vm_state'] = 'error'
                    server['OS-EXT-STS:task_state'] = None
                    server['fault'] = dict(fault, created=_now_iso(now),
                                           details='')
                else:
                    server['status'] = 'ACTIVE'
                    server['OS-EXT-STS:vm_state'] = 'active'
                    server['OS-EXT-STS:task_state'] = None
                    server['OS-EXT-STS:power_state'] = 1
                    self._assign_addresses(server)
                server['updated'] = _now_iso(now)

    def _assign_addresses(self, server):
        addresses = {}
        for nic in server['_nics']:
            net = self.networks[nic['network_id']]
            if 'port_id' in nic:
                port = self.ports[nic['port_id']]
            else:
                port = {'fixed_ips': self._fixed_ips(net['id']),
                        'mac_address': 'fa:16:3e:00:00:%02x' % (
                            next(self._ip_counter) % 256), 'id': None}
                nic['_fixed_ips'] = port['fixed_ips']
            entries = addresses.setdefault(net['name'], [])
            for fixed in port['fixed_ips']:
                address = ipaddress.ip_address(fixed['ip_address'])
                entries.append({'addr': str(address),
                                'version': address.version,
                                'OS-EXT-IPS:type': 'fixed',
                                'OS-EXT-IPS-MAC:mac_addr':
                                    port['mac_address']})
            for fip in self.floating_ips.values():
                if port['id'] is not None and fip['port_id'] == port['id']:
                    entries.append({'addr': fip['floating_ip_address'],
                                    'version': 4,
                                    'OS-EXT-IPS:type': 'floating',
                                    'OS-EXT-IPS-MAC:mac_addr':
                                        port['mac_address']})
        server['addresses'] = addresses

    def _remove_server(self, server):
        del self.servers[server['id']]
        for nic in server['_nics']:
            port = self.ports.get(nic.get('port_id'))
            if port is not None:
                port['device_id'] = ''
                port['device_owner'] = ''
        for attached in server['os-extended-volumes:volumes_attached']:
            volume = self.volumes.get(attached['id'])
            if volume is None:
                continue
            if attached['delete_on_termination'] and \
                    self.delete_volumes_on_termination:
                del self.volumes[volume['id']]
            else:
                volume['status'] = 'available'
                volume['attachments'] = []

    def _server_view(self, server):
        view = {k: v for k, v in server.items() if not k.startswith('_')}
        return json.loads(json.dumps(view))

    def _get_server(self, server_id):
        self._advance()
        server = self.servers.get(server_id)
        if server is None:
            raise FakeError(404, 'Instance %s could not be found.'
                            % server_id, key='itemNotFound')
        return server

    # -- volumes ---------------------------------------------------------

    def _new_volume(self, size, image_id=None, metadata=None):
        volume_id = str(uuid.uuid4())
        volume = {'id': volume_id, 'name': '', 'size': size,
                  'status': 'available', 'attachments': [],
                  'metadata': dict(metadata or {}), 'bootable': 'true',
                  'availability_zone': 'nova', 'volume_type': 'lvmdriver-1',
                  'created_at': _now_iso(), 'updated_at': _now_iso(),
                  'description': None, 'encrypted': False,
                  'multiattach': False,
                  'os-vol-tenant-attr:tenant_id': PROJECT_ID,
                  'volume_image_metadata': (
                      {'image_id': image_id} if image_id else {})}
        self.volumes[volume_id] = volume
        return volume

    def add_volume(self, size=1, metadata=None):
        with self.lock:
            return self._new_volume(size, metadata=metadata)

    # -- network ---------------------------------------------------------

    def _new_port(self, body):
        net_id = body.get('network_id')
        if net_id not in self.networks:
            raise FakeError(404, 'Network %s could not be found.' % net_id,
                            key='NeutronError')
        port_id = str(uuid.uuid4())
        port = {'id': port_id, 'name': body.get('name', ''),
                'description': body.get('description', ''),
                'network_id': net_id, 'device_id': body.get('device_id', ''),
                'device_owner': body.get('device_owner', ''),
                'fixed_ips': self._fixed_ips(net_id),
                'mac_address': 'fa:16:3e:01:00:%02x' % (
                    next(self._ip_counter) % 256),
                'status': 'DOWN', 'admin_state_up': True,
                'project_id': PROJECT_ID, 'tenant_id': PROJECT_ID,
                'security_groups': [], 'tags': [],
                'created_at': _now_iso(), 'updated_at': _now_iso()}
        self.ports[port_id] = port
        return port

    def _new_floating_ip(self, body):
        net_id = body.get('floating_network_id')
        net = self.networks.get(net_id)
        if net is None or not net['router:external']:
            raise FakeError(404, 'External network %s not found' % net_id,
                            key='NeutronError')
        port = None
        if body.get('port_id'):
            port = self.ports.get(body['port_id'])
            if port is None:
                raise FakeError(404, 'Port %s could not be found.'
                                % body['port_id'], key='NeutronError')
        subnet = self.subnets[net['subnets'][0]]
        fip_id = str(uuid.uuid4())
        fixed = None
        if port is not None:
            fixed = next((f['ip_address'] for f in port['fixed_ips']
                          if ':' not in f['ip_address']), None)
        fip = {'id': fip_id, 'floating_ip_address': self._next_ip(subnet),
               'floating_network_id': net_id,
               'port_id': port['id'] if port else None,
               'fixed_ip_address': fixed, 'router_id': None,
               'status': 'ACTIVE' if port else 'DOWN',
               'description': body.get('description', ''),
               'project_id': PROJECT_ID, 'tenant_id': PROJECT_ID,
               'tags': [], 'created_at': _now_iso(),
               'updated_at': _now_iso()}
        self.floating_ips[fip_id] = fip
        return fip


# -- HTTP ------------------------------------------------------------------

def _filtered(items, query, fields):
    """Neutron/Glance style equality filters on ``fields``."""
    out = []
    for item in items:
        keep = True
        for field in fields:
            if field in query:
                wanted = query[field][0]
                value = item.get(field)
                if isinstance(value, bool):
                    value = str(value).lower()
                    wanted = wanted.lower()
                if str(value) != wanted:
                    keep = False
        if keep:
            out.append(item)
    return out


def _version_doc(cloud, path, version_id, status='CURRENT', version='',
                 min_version=''):
    doc = {'id': version_id, 'status': status,
           'links': [{'rel': 'self', 'href': cloud.url + path}],
           'updated': '2024-01-01T00:00:00Z'}
    if version:
        doc['version'] = version
        doc['min_version'] = min_version
    return doc


class Routes:
    """Route table: (method, regex, name) -> handler method of _Handler."""

    def __init__(self):
        self.table = []

    def add(self, method, pattern, name):
        def register(func):
            self.table.append((method, re.compile('^' + pattern + '/?$'),
                               name, func))
            return func
        return register

    def match(self, method, path):
        for route_method, regex, name, func in self.table:
            found = regex.match(path)
            if found and route_method == method:
                return name, func, found.groupdict()
        return None, None, None


ROUTES = Routes()
ID = r'(?P<id>[^/]+)'
VOLUME_BASE = r'/volume/v3/(?P<project>[^/]+)'


class _Handler(http.server.BaseHTTPRequestHandler):
    cloud = None
    protocol_version = 'HTTP/1.1'
    disable_nagle_algorithm = True
    server_version = 'FakeOpenStack/1.0'

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        super().setup()
        with self.cloud.lock:
            self.cloud._connections.add(self.connection)

    def finish(self):
        with self.cloud.lock:
            self.cloud._connections.discard(self.connection)
        super().finish()

    # -- plumbing --------------------------------------------------------

    def _body(self):
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            data = b''
            while True:
                size = int(self.rfile.readline().strip() or b'0', 16)
                if size == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
            return data
        length = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(length) if length else b''

    def _json(self):
        data = self.raw_body
        return json.loads(data) if data else {}

    def _send(self, status, body=None, headers=None,
              content_type='application/json'):
        payload = b''
        if body is not None:
            payload = (body if isinstance(body, bytes)
                       else json.dumps(body).encode())
        self.send_response(status)
        if payload or status not in (204, 304):
            self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(payload)))
        self.send_header('X-Openstack-Request-Id',
                         'req-' + str(uuid.uuid4()))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _error(self, error, service):
        if service == 'network':
            body = {'NeutronError': {'type': 'Error',
                                     'message': error.message, 'detail': ''}}
        elif service == 'image':
            body = {'message': error.message, 'code': error.status,
                    'title': 'Error'}
        else:
            key = error.key or {
                400: 'badRequest', 403: 'forbidden', 404: 'itemNotFound',
                409: 'conflictingRequest', 413: 'overLimit',
                429: 'overLimit'}.get(error.status, 'computeFault')
            body = {key: {'message': error.message, 'code': error.status}}
        self._send(error.status, body, headers=error.headers)

    def _dispatch(self, method):
        cloud = self.cloud
        parsed = urllib.parse.urlsplit(self.path)
        path = parsed.path.rstrip('/') or '/'
        self.query = urllib.parse.parse_qs(parsed.query)
        self.raw_body = self._body()
        service = path.split('/')[1] if path != '/' else ''
        name, func, params = ROUTES.match(method, path)
        with cloud.lock:
            cloud.calls[name or 'unknown'] += 1
            cloud.requests.append((method, self.path, name))
            injection = None
            if name is not None:
                for candidate in cloud._injections:
                    if candidate.route == name and candidate.times > 0:
                        candidate.times -= 1
                        injection = candidate
                        break
                cloud._injections = [i for i in cloud._injections
                                     if i.times > 0]
        if func is None:
            self._error(FakeError(404, 'No route for %s %s' % (method, path)),
                        service)
            return
        if injection is not None:
            self._error(FakeError(injection.status, injection.message,
                                  injection.headers, injection.key), service)
            return
        if name != 'identity.tokens' and not name.endswith('.versions') \
                and not name.endswith('.version') \
                and self.headers.get('X-Auth-Token') not in cloud.tokens:
            self._error(FakeError(401, 'The request you have made requires '
                                  'authentication.'), service)
            return
        try:
            with cloud.lock:
                result = func(self, **params)
        except FakeError as e:
            self._error(e, service)
            return
        status, body = result[:2]
        headers = result[2] if len(result) > 2 else None
        self._send(status, body, headers)

    def do_GET(self):
        self._dispatch('GET')

    def do_POST(self):
        self._dispatch('POST')

    def do_PUT(self):
        self._dispatch('PUT')

    def do_DELETE(self):
        self._dispatch('DELETE')

    def do_PATCH(self):
        self._dispatch('PATCH')

    # -- identity ----------------------------------------------------------

    @ROUTES.add('GET', '/identity', 'identity.versions')
    def identity_versions(self):
        doc = _version_doc(self.cloud, '/identity/v3/', 'v3.14', 'stable')
        doc['media-types'] = [{'base': 'application/json',
                               'type': 'application/vnd.openstack.'
                               'identity-v3+json'}]
        return 300, {'versions': {'values': [doc]}}

    @ROUTES.add('GET', '/identity/v3', 'identity.version')
    def identity_version(self):
        doc = _version_doc(self.cloud, '/identity/v3/', 'v3.14', 'stable')
        return 200, {'version': doc}

    @ROUTES.add('POST', '/identity/v3/auth/tokens', 'identity.tokens')
    def identity_tokens(self):
        cloud = self.cloud
        body = self._json()
        identity = body.get('auth', {}).get('identity', {})
        user = identity.get('password', {}).get('user', {})
        if user.get('name') != USERNAME or user.get('password') != PASSWORD:
            raise FakeError(401, 'The request you have made requires '
                            'authentication.', key='error')
        token = uuid.uuid4().hex
        with cloud.lock:
            cloud.tokens.add(token)
        cloud.tokens_issued += 1
        base = cloud.url

        def service(stype, name, url):
            return {'type': stype, 'name': name, 'id': uuid.uuid4().hex,
                    'endpoints': [{'id': uuid.uuid4().hex,
                                   'interface': interface,
                                   'region': REGION, 'region_id': REGION,
                                   'url': url}
                                  for interface in ('public', 'internal')]}

        catalog = [
            service('identity', 'keystone', base + '/identity'),
            service('compute', 'nova', base + '/compute/v2.1'),
            service('image', 'glance', base + '/image'),
            service('network', 'neutron', base + '/network'),
            service('volumev3', 'cinderv3',
                    base + '/volume/v3/' + PROJECT_ID),
        ]
        now = time.time()
        return 201, {'token': {
            'methods': ['password'], 'expires_at': _now_iso(now + 3600)
            .replace('Z', '.000000Z'),
            'issued_at': _now_iso(now).replace('Z', '.000000Z'),
            'user': {'id': 'fleetflow-user-id', 'name': USERNAME,
                     'domain': {'id': 'default', 'name': 'Default'}},
            'project': {'id': PROJECT_ID, 'name': 'fleetflow',
                        'domain': {'id': 'default', 'name': 'Default'}},
            'roles': [{'id': 'member-role', 'name': 'member'}],
            'catalog': catalog}}, {'X-Subject-Token': token}

    # -- compute -----------------------------------------------------------

    def _compute_version(self):
        return _version_doc(self.cloud, '/compute/v2.1/', 'v2.1', 'CURRENT',
                            COMPUTE_MAX_VERSION, '2.1')

    @ROUTES.add('GET', '/compute', 'compute.versions')
    def compute_versions(self):
        return 200, {'versions': [self._compute_version()]}

    @ROUTES.add('GET', '/compute/v2.1', 'compute.version')
    def compute_version(self):
        return 200, {'version': self._compute_version()}

    @ROUTES.add('POST', '/compute/v2.1/servers', 'compute.servers.create')
    def servers_create(self):
        body = self._json().get('server') or {}
        server = self.cloud._new_server(body)
        return 202, {'server': {
            'id': server['id'], 'links': server['links'],
            'OS-DCF:diskConfig': 'MANUAL',
            'security_groups': server['security_groups'],
            'adminPass': 'not-a-secret'}}

    @ROUTES.add('GET', '/compute/v2.1/servers/detail',
                'compute.servers.detail')
    def servers_detail(self):
        cloud = self.cloud
        cloud._advance()
        servers = sorted(cloud.servers.values(),
                         key=lambda s: (s['created'], s['_seq']))
        body = {}
        limit = int(self.query.get('limit', [cloud.page_size or 0])[0])
        if limit:
            marker = self.query.get('marker', [None])[0]
            if marker is not None:
                ids = [s['id'] for s in servers]
                if marker not in ids:
                    raise FakeError(400, 'marker [%s] not found' % marker,
                                    key='badRequest')
                servers = servers[ids.index(marker) + 1:]
            if len(servers) > limit:
                servers = servers[:limit]
                body['servers_links'] = [{
                    'rel': 'next',
                    'href': '%s/compute/v2.1/servers/detail?limit=%d&'
                            'marker=%s' % (cloud.url, limit,
                                           servers[-1]['id'])}]
        body['servers'] = [cloud._server_view(s) for s in servers]
        return 200, body

    @ROUTES.add('GET', '/compute/v2.1/servers', 'compute.servers.list')
    def servers_list(self):
        self.cloud._advance()
        return 200, {'servers': [{'id': s['id'], 'name': s['name'],
                                  'links': s['links']}
                                 for s in self.cloud.servers.values()]}

    @ROUTES.add('GET', '/compute/v2.1/servers/' + ID, 'compute.servers.get')
    def servers_get(self, id):
        server = self.cloud._get_server(id)
        return 200, {'server': self.cloud._server_view(server)}

    @ROUTES.add('DELETE', '/compute/v2.1/servers/' + ID,
                'compute.servers.delete')
    def servers_delete(self, id):
        server = self.cloud._get_server(id)
        if server['_deleted_at'] is None:
            server['_deleted_at'] = time.time() + self.cloud.delete_delay
            server['OS-EXT-STS:task_state'] = 'deleting'
        self.cloud._advance()
        return 204, None

    @ROUTES.add('GET', '/compute/v2.1/servers/' + ID + '/metadata',
                'compute.servers.metadata')
    def servers_metadata(self, id):
        return 200, {'metadata': self.cloud._get_server(id)['metadata']}

    @ROUTES.add('GET', '/compute/v2.1/flavors/detail',
                'compute.flavors.detail')
    def flavors_detail(self):
        flavors = sorted(self.cloud.flavors.values(), key=lambda f: f['id'])
        return 200, {'flavors': flavors}

    @ROUTES.add('GET', '/compute/v2.1/flavors', 'compute.flavors.list')
    def flavors_list(self):
        return 200, {'flavors': [{'id': f['id'], 'name': f['name']}
                                 for f in self.cloud.flavors.values()]}

    @ROUTES.add('GET', '/compute/v2.1/flavors/' + ID, 'compute.flavors.get')
    def flavors_get(self, id):
        flavor = self.cloud.flavors.get(id)
        if flavor is None:
            raise FakeError(404, 'Flavor %s could not be found.' % id)
        return 200, {'flavor': flavor}

    @ROUTES.add('GET', '/compute/v2.1/limits', 'compute.limits')
    def limits(self):
        cloud = self.cloud
        cloud._advance()
        instances, cores, ram = cloud._usage()
        return 200, {'limits': {'rate': [], 'absolute': {
            'maxTotalInstances': cloud.max_instances,
            'maxTotalCores': cloud.max_cores,
            'maxTotalRAMSize': cloud.max_ram,
            'maxServerMeta': 128, 'maxImageMeta': 128,
            'maxPersonality': 5, 'maxPersonalitySize': 10240,
            'maxTotalKeypairs': 100, 'maxServerGroups': 10,
            'maxServerGroupMembers': 10,
            'totalInstancesUsed': instances, 'totalCoresUsed': cores,
            'totalRAMUsed': ram, 'totalServerGroupsUsed': 0}}}

    @ROUTES.add('GET', '/compute/v2.1/os-availability-zone',
                'compute.availability_zones')
    def availability_zones(self):
        return 200, {'availabilityZoneInfo': [
            {'zoneName': az, 'zoneState': {'available': True},
             'hosts': None} for az in self.cloud.azs]}

    # -- image -------------------------------------------------------------

    def _image_versions(self):
        return [_version_doc(self.cloud, '/image/v2/', 'v2.15', 'CURRENT')]

    @ROUTES.add('GET', '/image', 'image.versions')
    def image_versions(self):
        return 300, {'versions': self._image_versions()}

    @ROUTES.add('GET', '/image/versions', 'image.versions')
    def image_versions_explicit(self):
        return 200, {'versions': self._image_versions()}

    @ROUTES.add('GET', '/image/v2/images/' + ID, 'image.images.get')
    def images_get(self, id):
        image = self.cloud.images.get(id)
        if image is None:
            raise FakeError(404, 'No image found with ID %s' % id)
        return 200, image

    @ROUTES.add('GET', '/image/v2/images', 'image.images.list')
    def images_list(self):
        images = _filtered(self.cloud.images.values(), self.query,
                           ('name', 'status', 'visibility', 'id'))
        return 200, {'images': images, 'schema': '/v2/schemas/images',
                     'first': '/v2/images'}

    # -- network -----------------------------------------------------------

    @ROUTES.add('GET', '/network', 'network.versions')
    def network_versions(self):
        return 200, {'versions': [_version_doc(self.cloud, '/network/v2.0/',
                                               'v2.0', 'CURRENT')]}

    @ROUTES.add('GET', '/network/v2.0', 'network.version')
    def network_version(self):
        return 200, {'resources': []}

    @ROUTES.add('GET', '/network/v2.0/networks', 'network.networks.list')
    def networks_list(self):
        nets = _filtered(self.cloud.networks.values(), self.query,
                         ('id', 'name', 'router:external', 'shared'))
        return 200, {'networks': nets}

    @ROUTES.add('GET', '/network/v2.0/networks/' + ID,
                'network.networks.get')
    def networks_get(self, id):
        net = self.cloud.networks.get(id)
        if net is None:
            raise FakeError(404, 'Network %s could not be found.' % id)
        return 200, {'network': net}

    @ROUTES.add('GET', '/network/v2.0/ports', 'network.ports.list')
    def ports_list(self):
        ports = _filtered(self.cloud.ports.values(), self.query,
                          ('id', 'name', 'network_id', 'device_id',
                           'description'))
        return 200, {'ports': ports}

    @ROUTES.add('POST', '/network/v2.0/ports', 'network.ports.create')
    def ports_create(self):
        return 201, {'port': self.cloud._new_port(
            self._json().get('port') or {})}

    @ROUTES.add('GET', '/network/v2.0/ports/' + ID, 'network.ports.get')
    def ports_get(self, id):
        port = self.cloud.ports.get(id)
        if port is None:
            raise FakeError(404, 'Port %s could not be found.' % id)
        return 200, {'port': port}

    @ROUTES.add('DELETE', '/network/v2.0/ports/' + ID,
                'network.ports.delete')
    def ports_delete(self, id):
        port = self.cloud.ports.pop(id, None)
        if port is None:
            raise FakeError(404, 'Port %s could not be found.' % id)
        for fip in self.cloud.floating_ips.values():
            if fip['port_id'] == id:
                fip.update(port_id=None, fixed_ip_address=None,
                           status='DOWN')
        return 204, None

    @ROUTES.add('GET', '/network/v2.0/floatingips', 'network.fips.list')
    def fips_list(self):
        fips = _filtered(self.cloud.floating_ips.values(), self.query,
                         ('id', 'port_id', 'floating_network_id',
                          'description', 'floating_ip_address'))
        return 200, {'floatingips': fips}

    @ROUTES.add('POST', '/network/v2.0/floatingips', 'network.fips.create')
    def fips_create(self):
        return 201, {'floatingip': self.cloud._new_floating_ip(
            self._json().get('floatingip') or {})}

    @ROUTES.add('GET', '/network/v2.0/floatingips/' + ID,
                'network.fips.get')
    def fips_get(self, id):
        fip = self.cloud.floating_ips.get(id)
        if fip is None:
            raise FakeError(404, 'Floating IP %s could not be found' % id)
        return 200, {'floatingip': fip}

    @ROUTES.add('DELETE', '/network/v2.0/floatingips/' + ID,
                'network.fips.delete')
    def fips_delete(self, id):
        if self.cloud.floating_ips.pop(id, None) is None:
            raise FakeError(404, 'Floating IP %s could not be found' % id)
        return 204, None

    # -- volume ------------------------------------------------------------

    def _volume_version(self):
        return _version_doc(self.cloud, '/volume/v3/', 'v3.0', 'CURRENT',
                            VOLUME_MAX_VERSION, '3.0')

    @ROUTES.add('GET', '/volume', 'volume.versions')
    def volume_versions(self):
        return 300, {'versions': [self._volume_version()]}

    @ROUTES.add('GET', '/volume/v3', 'volume.version')
    def volume_version(self):
        return 200, {'versions': [self._volume_version()]}

    @ROUTES.add('GET', VOLUME_BASE, 'volume.version')
    def volume_project_version(self, project):
        return 200, {'versions': [self._volume_version()]}

    @ROUTES.add('GET', VOLUME_BASE + '/volumes/detail',
                'volume.volumes.detail')
    def volumes_detail(self, project):
        self.cloud._advance()
        return 200, {'volumes': list(self.cloud.volumes.values())}

    @ROUTES.add('GET', VOLUME_BASE + '/volumes/' + ID, 'volume.volumes.get')
    def volumes_get(self, project, id):
        self.cloud._advance()
        volume = self.cloud.volumes.get(id)
        if volume is None:
            raise FakeError(404, 'Volume %s could not be found.' % id)
        return 200, {'volume': volume}

    @ROUTES.add('POST', VOLUME_BASE + '/volumes/' + ID + '/metadata',
                'volume.volumes.metadata')
    def volumes_metadata(self, project, id):
        volume = self.cloud.volumes.get(id)
        if volume is None:
            raise FakeError(404, 'Volume %s could not be found.' % id)
        volume['metadata'].update(self._json().get('metadata') or {})
        return 200, {'metadata': volume['metadata']}

    @ROUTES.add('DELETE', VOLUME_BASE + '/volumes/' + ID,
                'volume.volumes.delete')
    def volumes_delete(self, project, id):
        self.cloud._advance()
        volume = self.cloud.volumes.get(id)
        if volume is None:
            raise FakeError(404, 'Volume %s could not be found.' % id)
        if volume['status'] == 'in-use':
            raise FakeError(400, 'Invalid volume: Volume status must be '
                            'available or error, but current status is: '
                            'in-use', key='badRequest')
        del self.cloud.volumes[id]
        return 202, None
