"""Postfix on a converged native mail host."""

from __future__ import annotations

import pytest

MAIL_PORTS = (25, 465, 587)


@pytest.mark.parametrize("port", MAIL_PORTS)
def test_postfix_listens(host, port):
    assert host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_postfix_check_passes(host):
    # postfix(1) logs to maillog_file: warnings it logs during the check mean a problem, even with exit 0.
    result = host.run(
        "n=$(wc -l < /var/log/postfix.log); postfix check; rc=$?; "
        "tail -n +$((n + 1)) /var/log/postfix.log | grep -E 'warning|fatal|error'; exit $rc"
    )
    assert result.rc == 0, result.stdout
    assert result.stdout.strip() == "", result.stdout


def test_postfix_running(host):
    assert host.run("service postfix status").rc == 0


def test_postfix_milters_configured(host):
    milters = host.run("postconf -h smtpd_milters").stdout
    assert "inet:127.0.0.1:8891" in milters
    assert "spamass.sock" in milters


def test_postfix_tls_minimum_on_every_port(host):
    for name in ("smtpd_tls_protocols", "smtpd_tls_mandatory_protocols", "smtp_tls_protocols"):
        assert host.run(f"postconf -h {name}").stdout.strip() in (">=TLSv1.2", ">=TLSv1.3")


def test_postfix_warmup_limits_in_main_cf(host):
    # The queue manager reads per-transport limits from main.cf only (master.cf -o has no effect).
    transports = [
        line.split()[0]
        for line in host.file("/etc/postfix/master.cf").content_string.splitlines()
        if line.startswith("smtp-") and " unix " in line
    ]
    assert transports
    for transport in transports:
        delay = host.run(f"postconf -h {transport}_destination_rate_delay")
        assert delay.rc == 0 and delay.stdout.strip().endswith("s")
        assert host.run(f"postconf -h {transport}_destination_concurrency_limit").stdout.strip().isdigit()


def test_postfix_smtp_listens_on_ipv4_only_unless_ipv6_is_configured(host):
    # SPF and PTR cover the node's IPv4 address; an IPv6 listener would receive and send outside them.
    protocols = host.run("postconf -h inet_protocols").stdout.strip()
    listeners = host.run("ss -Hltn").stdout
    if protocols == "ipv4":
        for port in MAIL_PORTS:
            assert f"[::]:{port} " not in listeners, listeners


def test_submission_refuses_senders_the_login_does_not_own(host):
    assert (
        host.run("postconf -h smtpd_sender_login_maps").stdout.strip()
        == "texthash:/etc/postfix/sender_logins"
    )
    for service in ("submission", "submissions"):
        restrictions = host.run(f"postconf -P {service}/inet/smtpd_sender_restrictions").stdout
        assert "reject_sender_login_mismatch" in restrictions, service


def test_sender_milter_runs_on_loopback_before_opendkim(host):
    assert host.run("service penguinmails-sender-milter status").rc == 0
    assert host.socket("tcp://127.0.0.1:8893").is_listening
    assert not host.socket("tcp://0.0.0.0:8893").is_listening
    milters = [m.strip() for m in host.run("postconf -h smtpd_milters").stdout.split(",")]
    assert milters.index("inet:127.0.0.1:8893") < milters.index("inet:127.0.0.1:8891")
