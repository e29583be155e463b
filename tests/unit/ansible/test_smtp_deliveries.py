"""The monitoring agent's delivery counter: Postfix log lines to penguinmails_smtp_deliveries_total."""

from __future__ import annotations

import importlib.util

from modules.ansible.runner import ANSIBLE_DIR

_spec = importlib.util.spec_from_file_location(
    "smtp_deliveries",
    ANSIBLE_DIR
    / "roles"
    / "monitoring_agent"
    / "files"
    / "opt"
    / "penguinmails"
    / "monitoring"
    / "smtp_deliveries.py",
)
deliveries = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(deliveries)

TRANSPORTS = {"main": "203.0.113.10", "ip2": "203.0.113.11"}
PREFIX = "Dec 02 05:20:25 mx-1 "
SENT = PREFIX + (
    "postfix/smtp-main/smtp[2522]: 02BBF17E079: to=<a@b.example>, relay=mx.b.example[198.51.100.7]:25, "
    "delay=0.26, delays=0.09/0.17/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)"
)
BOUNCED = PREFIX + (
    "postfix/smtp-ip2/smtp[2523]: 12BBF17E079: to=<x@b.example>, relay=mx.b.example[198.51.100.7]:25, "
    "delay=1, delays=0/0/0/1, dsn=5.1.1, status=bounced (host said: 550 5.1.1 no such user)"
)
DEFERRED_DEFAULT = PREFIX + (
    "postfix/smtp[2524]: 22BBF17E079: to=<nobody@[10.88.0.190]>, relay=none, delay=0.26, "
    "delays=0.09/0.17/0/0, dsn=4.4.1, status=deferred (connect to 10.88.0.190[10.88.0.190]:25: Connection refused)"
)


def test_lines_map_to_their_transports_sending_ip_and_status():
    assert deliveries.classify(SENT, TRANSPORTS) == ("203.0.113.10", "sent")
    assert deliveries.classify(BOUNCED, TRANSPORTS) == ("203.0.113.11", "bounced")
    assert deliveries.classify(DEFERRED_DEFAULT, TRANSPORTS) == ("default", "deferred")
    assert deliveries.classify(SENT.replace("smtp-main/", "smtp-gone/"), TRANSPORTS) == ("unknown", "sent")


def test_other_lines_are_not_deliveries():
    for line in (
        PREFIX + "postfix/smtp[1]: connect to 10.88.0.190[10.88.0.190]:25: Connection refused",
        PREFIX + "postfix/lmtp[1]: 3ABC: to=<a@b.example>, relay=dovecot, dsn=2.0.0, status=sent (ok)",
        PREFIX + "postfix/qmgr[1]: 3ABC: from=<a@b.example>, status=expired, returned to sender",
        PREFIX + "postfix/smtpd[1]: connect from unknown[10.88.0.1]",
        PREFIX + "postfix/submission/smtpd[1]: 4ABC: client=unknown[10.88.0.1], sasl_username=a@b.example",
    ):
        assert deliveries.classify(line, TRANSPORTS) is None


def test_runs_continue_the_counts_and_restart_after_rotation(tmp_path):
    log, state, out = tmp_path / "postfix.log", tmp_path / "state.json", tmp_path / "smtp.prom"
    argv = [
        "--log",
        str(log),
        "--state",
        str(state),
        "--output",
        str(out),
        "--transport",
        "main=203.0.113.10",
    ]
    log.write_text(SENT + "\n" + DEFERRED_DEFAULT + "\n" + SENT[:40])  # the last line is still being written
    assert deliveries.main(argv) == 0
    text = out.read_text()
    assert 'penguinmails_smtp_deliveries_total{sending_ip="203.0.113.10",status="sent"} 1' in text
    assert 'penguinmails_smtp_deliveries_total{sending_ip="default",status="deferred"} 1' in text
    # Every configured IP has all statuses from the start, so a first bounce is an increase.
    assert 'penguinmails_smtp_deliveries_total{sending_ip="203.0.113.10",status="bounced"} 0' in text
    with log.open("a") as handle:
        handle.write(SENT[40:] + "\n")
    deliveries.main(argv)
    assert 'sending_ip="203.0.113.10",status="sent"} 2' in out.read_text()
    deliveries.main(argv)  # nothing new: nothing counted twice
    assert 'sending_ip="203.0.113.10",status="sent"} 2' in out.read_text()
    log.unlink()
    log.write_text(SENT + "\n")  # rotated: a new file, read from its start; the counter keeps growing
    deliveries.main(argv)
    assert 'sending_ip="203.0.113.10",status="sent"} 3' in out.read_text()
    assert oct(state.stat().st_mode & 0o777) == "0o600"
