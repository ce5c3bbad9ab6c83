"""A plain HTTP(S) server for probe tests: what a probed service, a victim, a trickling or
an endless server answer (tests/unit/test_outbound_http.py, tests/integration/test_probe_ssrf.py).
"""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class Handler(BaseHTTPRequestHandler):
    """/ok (anything else) → 200 pong; /redirect?to=URL → 302 to URL; /loop → 302 to itself;
    /bytes?n=N → N bytes; /endless → a body that never ends; /trickle → 200, then one byte
    a second for ever; /trickle-body, /trickle-headers → a byte every 0.2 s, in the body or
    in the headers. Every request's path and Host header are recorded."""

    server: Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self.server.hits.append(url.path)
        self.server.hosts.append(self.headers.get("Host", ""))
        query = parse_qs(url.query)
        try:
            if url.path == "/redirect":
                self._answer(302, b"", location=query["to"][0])
            elif url.path == "/loop":
                self._answer(302, b"", location="/loop")
            elif url.path == "/bytes":
                self._answer(200, b"x" * int(query["n"][0]))
            elif url.path == "/endless":  # no length: the body ends when the server hangs up
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                while not self.server.closing.is_set():
                    self.wfile.write(b"\0" * 65536)
            elif url.path == "/trickle":  # a length it never reaches: one byte a second
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                while not self.server.closing.wait(1.0):
                    self.wfile.write(b".")
                    self.wfile.flush()
            elif url.path == "/trickle-body":
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                while not self.server.closing.wait(0.2):
                    self.wfile.write(b".")
                    self.wfile.flush()
            elif url.path == "/trickle-headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while not self.server.closing.wait(0.2):
                    self.wfile.write(b"a")
                    self.wfile.flush()
            else:
                self._answer(200, b"pong\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass

    def _answer(self, status: int, body: bytes, location: str | None = None) -> None:
        self.send_response(status)
        if location is not None:
            self.send_header("Location", location)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, tls: ssl.SSLContext | None) -> None:
        super().__init__((host, 0), Handler)
        self.tls = tls
        self.hits: list[str] = []
        self.hosts: list[str] = []
        self.closing = threading.Event()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up on purpose is not news

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str = "/ok") -> str:
        return f"http://{self.server_address[0]!s}:{self.port}{path}"


@contextmanager
def serving(host: str, tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    server = Server(host, tls)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.closing.set()
        server.shutdown()
        server.server_close()


def tls_pair(workdir: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a self-signed certificate for `name`, and a client context
    that trusts it (and checks host names, as the default does)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                  critical=True)
                   .sign(key, hashes.SHA256()))
    cert_file, key_file = workdir / "cert.pem", workdir / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client
