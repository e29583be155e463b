"""A small certificate authority and a local HTTPS policy server for the MTA-STS tests.

Until the stack issues certificates itself (ACME), the tests make their own CA with ``cryptography``: a
leaf for the policy host names, an expired leaf, and the CA file the verifier is pointed at. The policy
server is a real TLS server (Python's ``ssl``) on loopback, for the unit tests of the fetcher.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_PEM = serialization.Encoding.PEM


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class LabCa:
    """A CA of one test run: ``issue`` leaves for names, ``write`` the CA bundle the verifier trusts."""

    name: str = "PenguinMails test CA"
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def __post_init__(self) -> None:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(days=1))
            .not_valid_after(_now() + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(_PEM).decode()

    def write(self, path: Path) -> Path:
        path.write_text(self.pem)
        return path

    def issue(self, names: list[str], expired: bool = False) -> tuple[str, str]:
        """A leaf for ``names`` (SANs): (certificate PEM, private key PEM). ``expired``: ended yesterday."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = _now() - datetime.timedelta(days=10 if expired else 1)
        end = _now() - datetime.timedelta(days=1) if expired else _now() + datetime.timedelta(days=20)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return cert.public_bytes(_PEM).decode(), key_pem.decode()


@dataclass
class Served:
    """What the local policy server answers (tests change it between requests)."""

    body: bytes = b""
    status: int = 200
    content_type: str = "text/plain"
    location: str | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)  # (Host header, path)
    sni: list[str | None] = field(default_factory=list)  # the server name each TLS client asked for


@contextlib.contextmanager
def policy_server(folder: Path, cert_pem: str, key_pem: str, served: Served) -> Iterator[int]:
    """An HTTPS server on 127.0.0.1 (a free port, yielded) serving ``served`` at every path."""
    cert_file, key_file = folder / "leaf.crt", folder / "leaf.key"
    cert_file.write_text(cert_pem)
    key_file.write_text(key_pem)
    key_file.chmod(0o600)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.requests.append((self.headers.get("Host", ""), self.path))
            self.send_response(served.status)
            self.send_header("Content-Type", served.content_type)
            if served.location:
                self.send_header("Location", served.location)
            self.send_header("Content-Length", str(len(served.body)))
            self.end_headers()
            self.wfile.write(served.body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.sni_callback = lambda _sock, name, _context: served.sni.append(name)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
