"""TLS to the jobboard's ZooKeeper servers that trusts one CA only.

kazoo's own TLS also trusts the system's CAs, and checks no hostname by
default. Imported only with the ZooKeeper jobboard (kazoo is an extra).
"""

import ssl

from kazoo.handlers import threading as kazoo_threading


class TLSHandler(kazoo_threading.SequentialThreadingHandler):
    """kazoo's handler, whose TLS trusts ``ca_file`` and checks hostnames.

    The connection is made as kazoo makes a plain one, then wrapped with a
    context of the standard library's defaults (certificate required,
    hostname checked) that trusts the CA of ``ca_file`` alone; with
    ``cert_file``, it presents that client certificate.
    """

    def __init__(self, ca_file, cert_file=None, key_file=None):
        super().__init__()
        self.context = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            self.context.load_cert_chain(cert_file, key_file)

    def create_connection(self, address, hostname=None, timeout=None,
                          use_ssl=False, **kwargs):
        sock = super().create_connection(address, timeout=timeout)
        try:
            return self.context.wrap_socket(
                sock, server_hostname=hostname or address[0])
        except Exception:
            sock.close()
            raise
