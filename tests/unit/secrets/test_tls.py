"""The stack's CA and server certificates: a chain a TLS client accepts, bad input named, renewal planned."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from modules.secrets import tls


def _serve_once(cert_pem: str, key_pem: str, tmp_path) -> tuple[int, threading.Thread]:
    (tmp_path / "c.pem").write_text(cert_pem)
    (tmp_path / "k.pem").write_text(key_pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        with listener, listener.accept()[0] as raw:
            try:
                with server.wrap_socket(raw, server_side=True) as conn:
                    conn.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    return port, thread


def _client(ca_pem: str, port: int, server_hostname: str) -> bytes:
    context = ssl.create_default_context(cadata=ca_pem)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as conn:
            return conn.recv(2)


def test_a_tls_client_trusting_only_the_ca_accepts_the_server_by_name_and_ip(tmp_path):
    ca_pem, ca_key = tls.make_ca(tls.CaSpec("unit CA"))
    cert_pem, key_pem = tls.issue(tls.ServerCertSpec(("redis-01.pm.test",), ("127.0.0.1",)), ca_pem, ca_key)
    for name in ("redis-01.pm.test", "127.0.0.1"):
        port, thread = _serve_once(cert_pem, key_pem, tmp_path)
        assert _client(ca_pem, port, name) == b"ok"
        thread.join(5)
    port, thread = _serve_once(cert_pem, key_pem, tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        _client(ca_pem, port, "other.pm.test")
    thread.join(5)
    other_ca, _ = tls.make_ca(tls.CaSpec("another CA"))
    port, thread = _serve_once(cert_pem, key_pem, tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        _client(other_ca, port, "redis-01.pm.test")
    thread.join(5)


def test_the_ca_signs_servers_only_and_keys_are_pkcs8():
    ca_pem, ca_key = tls.make_ca(tls.CaSpec("unit CA"))
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    key = serialization.load_pem_private_key(ca_key.encode(), password=None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert pkcs8.decode() == ca_key


@pytest.mark.parametrize(
    ("props", "field"),
    [
        ({"dns_names": [], "ip_addresses": []}, "dns_names"),
        ({"dns_names": ["a b"], "ip_addresses": []}, "dns_names"),
        ({"dns_names": [], "ip_addresses": ["10.88.0.999"]}, "ip_addresses"),
        ({"dns_names": ["a.test"], "ip_addresses": [], "validity_days": 5000}, "validity_days"),
        ({"dns_names": ["a.test"], "ip_addresses": [], "renew_before_days": 400}, "renew_before_days"),
    ],
)
def test_bad_certificate_input_is_refused_naming_the_field(props, field):
    failures = tls.ServerCertificateProvider().check({}, props).failures
    assert [f.property for f in failures] == [field]


def test_a_certificate_near_expiry_is_planned_as_a_replace_and_a_fresh_one_is_not(monkeypatch):
    ca_pem, ca_key = tls.make_ca(tls.CaSpec("unit CA"))
    props = {
        "dns_names": ["r.pm.test"],
        "ip_addresses": [],
        "validity_days": 90,
        "renew_before_days": 30,
        "ca_cert_pem": ca_pem,
        "ca_key_pem": ca_key,
    }
    provider = tls.ServerCertificateProvider()
    created = provider.create(props).outs
    assert provider.diff("id", created, props).replaces == []
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=61)
    monkeypatch.setattr(tls, "_now", lambda: later)
    assert provider.diff("id", created, props).replaces == ["cert_pem"]
    assert provider.diff("id", created, {**props, "dns_names": ["s.pm.test"]}).replaces[0] == "dns_names"
