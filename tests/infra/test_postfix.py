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
