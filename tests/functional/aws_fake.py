"""EC2 on loopback for the aws driver's tests: moto's server and a fault proxy.

:class:`MotoServer` runs moto in server mode (``python -m moto.server``)
as a subprocess on a free loopback port; one is shared by the tests of a
process and reset (``/moto-api/reset``) before each test.

:class:`FaultProxy` is an HTTP server on 127.0.0.1 that boto3 is pointed
at (``AWS_ENDPOINT_URL``). It forwards every call to moto and records it
(``calls``), and adds what moto does not do:

- errors EC2 gives and moto never does (:meth:`FaultProxy.inject`):
  ``RequestLimitExceeded``, ``InsufficientInstanceCapacity``,
  ``InstanceLimitExceeded``, ``VcpuLimitExceeded``,
  ``MaxSpotInstanceCountExceeded``;
- ``ClientToken`` idempotency: a ``RunInstances`` that repeats a token is
  answered with the first call's answer, as EC2 does (moto makes a new
  instance each time);
- a listing that lags (``lag_new_instances``): instances a RunInstances
  made stay out of DescribeInstances until the token is used again, as
  EC2's eventually consistent reads may do after a create;
- instances EC2 ends on its own (:meth:`FaultProxy.end_instance`,
  ``end_new_instances``): shown as terminated with the given StateReason;
- Service Quotas' EC2 vCPU quotas (``quotas``), which moto lacks;
- a held answer (:meth:`FaultProxy.hold`): the call is done in moto, and
  its answer waits until released, for a crash between a call and its
  result.
"""

import collections
import http.client
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from xml.etree import ElementTree

import fixtures

REGION = 'us-east-1'
START_TIMEOUT = 60

_SCOPE = re.compile(r'Credential=[^/]+/[^/]+/[^/]+/([^/]+)/')


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class MotoServer:
    """moto's server as a subprocess on 127.0.0.1."""

    def __init__(self):
        self.port = _free_port()
        self.url = 'http://127.0.0.1:%d' % self.port
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'moto.server', '-H', '127.0.0.1',
             '-p', str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError('moto server exited with %s'
                                   % self.process.returncode)
            try:
                socket.create_connection(('127.0.0.1', self.port),
                                         0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError('moto server not listening after '
                                       '%ss' % START_TIMEOUT)
                time.sleep(0.05)

    def reset(self):
        request = urllib.request.Request(self.url + '/moto-api/reset',
                                         data=b'', method='POST')
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


_shared = {}


def shared_moto():
    """This process's moto server, started on first use, reset each time."""
    server = _shared.get('moto')
    if server is None or server.process.poll() is not None:
        server = _shared['moto'] = MotoServer()
        import atexit
        atexit.register(server.stop)
    else:
        server.reset()
    return server


Call = collections.namedtuple('Call', 'service action params')
Injection = collections.namedtuple('Injection',
                                   'action code message status times')


class FaultProxy:
    """A recording, fault-injecting HTTP proxy in front of moto."""

    def __init__(self, upstream):
        self.upstream = urllib.parse.urlsplit(upstream).netloc
        self.lock = threading.Lock()
        self.requests = []
        self._injections = []
        #: Service Quotas of EC2 by quota code (vCPUs)
        self.quotas = {}
        #: AWS default quotas of EC2 by quota code
        self.default_quotas = {}
        #: hold off new instances from listings until their token repeats
        self.lag_new_instances = False
        #: ids left out of listings, by the token that made them
        self.hidden = {}
        #: (StateReason code, message) of instances EC2 ended, by id
        self.ended = {}
        #: (code, message) each: EC2 ends the next instances made, one each
        self.end_new_instances = []
        self._answers = {}
        self._hold = None
        self.held = threading.Event()
        self.released = threading.Event()
        self._httpd = None

    def start(self):
        handler = type('Handler', (_Handler,), {'proxy': self})
        self._httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                                      handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever,
                         kwargs={'poll_interval': 0.05},
                         name='aws-fault-proxy', daemon=True).start()
        return self

    def stop(self):
        self.released.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self._httpd.server_address[1]

    # -- switches ------------------------------------------------------------

    def inject(self, action, code, message='injected', status=400,
               times=1):
        """Answer the next ``times`` calls of ``action`` with an error."""
        with self.lock:
            self._injections.append(Injection(action, code, message, status,
                                              times))

    def hold(self, action):
        """Do the next call of ``action``, then keep its answer back.

        ``held`` is set once the call is done in moto; the answer is sent
        (to whoever still listens) when ``released`` is set.
        """
        self._hold = action

    def end_instance(self, instance_id, code, message):
        """Show the instance as terminated by EC2, for this reason."""
        with self.lock:
            self.ended[instance_id] = (code, message)

    def calls(self, action):
        """The parameters of each call of ``action`` so far."""
        with self.lock:
            return [call.params for call in self.requests
                    if call.action == action]

    def reset_calls(self):
        with self.lock:
            del self.requests[:]

    # -- the work --------------------------------------------------------

    def _injected(self, action):
        with self.lock:
            for index, injection in enumerate(self._injections):
                if injection.action == action:
                    if injection.times <= 1:
                        del self._injections[index]
                    else:
                        self._injections[index] = injection._replace(
                            times=injection.times - 1)
                    return injection
        return None

    def _service_quota(self, action, params):
        """(status, JSON answer) for EC2's Service Quotas, else None."""
        if params.get('ServiceCode') != 'ec2':
            return None
        table = self.quotas if action == 'GetServiceQuota' else \
            self.default_quotas
        code = params.get('QuotaCode')
        if code not in table:
            return 400, {'__type': 'NoSuchResourceException',
                         'message': 'No quota %s for ec2' % code}
        return 200, {'Quota': {
            'ServiceCode': 'ec2', 'ServiceName': 'Amazon EC2',
            'QuotaCode': code, 'QuotaName': 'vCPUs %s' % code,
            'Value': float(table[code]), 'Unit': 'None',
            'Adjustable': True, 'GlobalQuota': False}}

    def _rewrite_listing(self, body):
        """Leave hidden instances out and show ended ones as terminated."""
        with self.lock:
            hidden = {instance_id for ids in self.hidden.values()
                      for instance_id in ids}
            ended = dict(self.ended)
        if not hidden and not ended:
            return body
        root = ElementTree.fromstring(body)
        ns = root.tag[1:].split('}')[0] if root.tag.startswith('{') else ''
        ElementTree.register_namespace('', ns)

        def tag(name):
            return '{%s}%s' % (ns, name) if ns else name

        reservations = root.find(tag('reservationSet'))
        for reservation in list(reservations):
            instances = reservation.find(tag('instancesSet'))
            for item in list(instances):
                instance_id = item.findtext(tag('instanceId'))
                if instance_id in hidden:
                    instances.remove(item)
                elif instance_id in ended:
                    state = item.find(tag('instanceState'))
                    state.find(tag('code')).text = '48'
                    state.find(tag('name')).text = 'terminated'
                    reason = item.find(tag('stateReason'))
                    if reason is None:
                        reason = ElementTree.SubElement(item,
                                                        tag('stateReason'))
                    for child in list(reason):
                        reason.remove(child)
                    code, message = ended[instance_id]
                    ElementTree.SubElement(reason, tag('code')).text = code
                    ElementTree.SubElement(reason,
                                           tag('message')).text = message
            if not len(instances):
                reservations.remove(reservation)
        return ElementTree.tostring(root, encoding='utf-8')

    def _forward(self, handler, body):
        connection = http.client.HTTPConnection(self.upstream, timeout=60)
        try:
            headers = {k: val for k, val in handler.headers.items()
                       if k.lower() not in ('connection', 'keep-alive')}
            connection.request(handler.command, handler.path, body, headers)
            answer = connection.getresponse()
            return (answer.status, answer.getheader('Content-Type'),
                    answer.read())
        finally:
            connection.close()

    def handle(self, handler):
        length = int(handler.headers.get('Content-Length') or 0)
        body = handler.rfile.read(length) if length else b''
        match = _SCOPE.search(handler.headers.get('Authorization') or '')
        service = match.group(1) if match else None
        target = handler.headers.get('X-Amz-Target')
        if target:
            action = target.rsplit('.', 1)[-1]
            params = json.loads(body or b'{}')
        else:
            params = {key: values[0] for key, values in
                      urllib.parse.parse_qs(body.decode('utf-8')).items()}
            action = params.get('Action')
        with self.lock:
            self.requests.append(Call(service, action, params))

        injection = self._injected(action)
        if injection is not None:
            if target:
                return injection.status, 'application/x-amz-json-1.1', \
                    json.dumps({'__type': injection.code,
                                'message': injection.message}).encode()
            return injection.status, 'text/xml', _ec2_error(
                injection.code, injection.message)
        if service == 'servicequotas' and action in (
                'GetServiceQuota', 'GetAWSDefaultServiceQuota'):
            answer = self._service_quota(action, params)
            if answer is not None:
                return answer[0], 'application/x-amz-json-1.1', \
                    json.dumps(answer[1]).encode()

        token = params.get('ClientToken') if action == 'RunInstances' \
            else None
        if token:
            with self.lock:
                known = self._answers.get(token)
                if known is not None:
                    self.hidden.pop(token, None)
            if known is not None:
                return known
        status, content_type, data = self._forward(handler, body)
        if action == 'DescribeInstances' and status == 200:
            data = self._rewrite_listing(data)
        if action == 'RunInstances' and status == 200:
            for instance_id in _instance_ids(data):
                with self.lock:
                    reason = self.end_new_instances and \
                        self.end_new_instances.pop(0)
                if reason:
                    self.end_instance(instance_id, *reason)
        if token and status == 200:
            with self.lock:
                self._answers[token] = (status, content_type, data)
                if self.lag_new_instances:
                    self.hidden[token] = _instance_ids(data)
        if action == self._hold:
            self._hold = None
            self.held.set()
            self.released.wait(START_TIMEOUT)
        return status, content_type, data


def _instance_ids(body):
    return re.findall(r'<instanceId>(i-[0-9a-f]+)</instanceId>',
                      body.decode('utf-8'))


def _ec2_error(code, message):
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors>'
            '<Error><Code>%s</Code><Message>%s</Message></Error></Errors>'
            '<RequestID>%s</RequestID></Response>'
            % (code, message, uuid.uuid4())).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    proxy = None

    def log_message(self, format, *args):
        pass

    def _serve(self):
        status, content_type, data = self.proxy.handle(self)
        try:
            self.send_response(status)
            self.send_header('Content-Type', content_type or 'text/xml')
            self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            # the caller is gone (killed while its answer was held)
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve


class AwsFixture(fixtures.Fixture):
    """moto behind a FaultProxy, and an environment that points boto3 there.

    Nothing of the user's AWS configuration is read: the config and
    credentials files are empty temporary ones.
    """

    def _setUp(self):
        self.moto = shared_moto()
        self.proxy = FaultProxy(self.moto.url).start()
        self.addCleanup(self.proxy.stop)
        tmp = self.useFixture(fixtures.TempDir()).path
        for name in list(os.environ):
            if name.startswith('AWS_'):
                self.useFixture(fixtures.EnvironmentVariable(name))
        self.env = {
            'AWS_ACCESS_KEY_ID': 'fleetflow-test-key',
            'AWS_SECRET_ACCESS_KEY': 'fleetflow-test-secret',
            'AWS_DEFAULT_REGION': REGION,
            'AWS_ENDPOINT_URL': self.proxy.url,
            'AWS_CONFIG_FILE': os.path.join(tmp, 'config'),
            'AWS_SHARED_CREDENTIALS_FILE': os.path.join(tmp, 'credentials'),
            'AWS_EC2_METADATA_DISABLED': 'true',
        }
        for name, value in self.env.items():
            self.useFixture(fixtures.EnvironmentVariable(name, value))

    def client(self, service='ec2'):
        """A boto3 client straight to moto (not through the proxy)."""
        import boto3
        return boto3.client(service, region_name=REGION,
                            endpoint_url=self.moto.url)
