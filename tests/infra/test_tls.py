"""TLS on every mail port of a converged native mail host: 1.2 and 1.3 accepted, anything older refused.

The client (openssl on the host itself) is allowed to offer TLS 1.0/1.1 (security level 0), so a failed
handshake is the server's refusal, and the same client with TLS 1.2 succeeding proves it could connect.
"""

from __future__ import annotations

import pytest

PORTS = {25: "-starttls smtp", 587: "-starttls smtp", 465: "", 993: ""}


def _handshake(host, port: int, version: str) -> str:
    command = (
        f"echo | timeout 20 openssl s_client -connect 127.0.0.1:{port} {PORTS[port]} {version} "
        "-cipher DEFAULT:@SECLEVEL=0 2>&1"
    )
    return host.run(command).stdout


@pytest.mark.parametrize("port", sorted(PORTS))
def test_tls_below_1_2_refused(host, port):
    for version in ("-tls1", "-tls1_1"):
        output = _handshake(host, port, version)
        assert "Cipher is (NONE)" in output, f"port {port} accepted {version}:\n{output[-400:]}"


@pytest.mark.parametrize("port", sorted(PORTS))
def test_tls_1_2_and_1_3_accepted(host, port):
    for version in ("-tls1_2", "-tls1_3"):
        output = _handshake(host, port, version)
        assert "Cipher is (NONE)" not in output and ", Cipher is " in output, output[-400:]
