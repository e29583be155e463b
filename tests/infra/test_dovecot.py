"""Dovecot on a converged native mail host."""

from __future__ import annotations


def test_dovecot_listens_on_imaps(host):
    assert host.socket("tcp://0.0.0.0:993").is_listening


def test_dovecot_has_no_plain_imap(host):
    assert not host.socket("tcp://0.0.0.0:143").is_listening


def test_dovecot_config_passes_doveconf(host):
    result = host.run("doveconf -n")
    assert result.rc == 0, result.stderr
    assert "ssl = required" in result.stdout
    assert host.run("doveconf -h ssl_min_protocol").stdout.strip() in ("TLSv1.2", "TLSv1.3")


def test_dovecot_lmtp_and_auth_sockets_for_postfix(host):
    for path in ("/var/spool/postfix/private/dovecot-lmtp", "/var/spool/postfix/private/auth"):
        socket_file = host.file(path)
        assert socket_file.is_socket
        assert socket_file.user == "postfix"


def test_dovecot_passwords_are_hashed(host):
    users = host.file("/etc/dovecot/users")
    assert users.mode == 0o640
    entries = [line for line in users.content_string.splitlines() if line and not line.startswith("#")]
    assert entries
    assert all(":{SHA512-CRYPT}$6$" in line for line in entries)
