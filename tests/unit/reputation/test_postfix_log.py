"""The Postfix log parser on lines a real Postfix wrote (tests/integration/test_warmup_enforcement.py's host:
its per-IP transport smtp-main delivering to a sink that accepts, defers and bounces, local LMTP deliveries
and the policy service's refusals)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from modules.reputation import postfix_log

SAMPLE = (Path(__file__).parent / "data" / "postfix.log").read_text().splitlines()


def _now() -> datetime:
    """Just after the sample's last line (the file carries no year: the parser takes the latest one)."""
    last = max(postfix_log._timestamp(line[:15], datetime.now(UTC)) for line in SAMPLE if line[:3].isalpha())
    return last + timedelta(minutes=1)


def test_the_sample_has_every_kind_of_line():
    text = "\n".join(SAMPLE)
    for needle in (
        "postfix/smtp-main/smtp[",
        "status=sent",
        "status=deferred",
        "status=bounced",
        "NOQUEUE: reject",
    ):
        assert needle in text
    assert "postfix/lmtp[" in text  # local deliveries, which must not count


def test_only_the_sending_transport_is_counted_and_each_outcome_once_per_attempt():
    now = _now()
    found = postfix_log.count(SAMPLE, now=now, default_ip="main")
    assert set(found) == {"main"}
    main = found["main"]
    sent = sum("postfix/smtp-main/smtp[" in line and "status=sent" in line for line in SAMPLE)
    deferred = sum("postfix/smtp-main/smtp[" in line and "status=deferred" in line for line in SAMPLE)
    bounced = sum("postfix/smtp-main/smtp[" in line and "status=bounced" in line for line in SAMPLE)
    assert (main.delivered, main.deferred, main.bounced) == (sent, deferred, bounced)
    assert sent >= 2 and deferred >= 1 and bounced >= 1
    assert main.last_sent_at is not None and main.last_sent_at < now


def test_lines_before_since_are_left_out():
    now = _now()
    assert postfix_log.count(SAMPLE, now=now, since=now, default_ip="main") == {}


def test_an_unknown_transport_without_default_is_not_guessed():
    line = (
        "Jun  3 10:00:03 mx-1 postfix/relay/smtp[83]: 4A3: to=<c@example.org>, relay=y[192.0.2.2]:25, "
        "delay=1, delays=0/0/0/1, dsn=5.1.1, status=bounced (550 no)"
    )
    assert postfix_log.count([line], now=datetime(2025, 6, 3, 12, tzinfo=UTC)) == {}
    iso = "2025-06-03T10:00:03.123456+00:00 mx-1 postfix/smtp-ip7/smtp[83]: 4A3: to=<c@gmail.com>, status=sent (250)"
    found = postfix_log.count([iso], now=datetime(2025, 6, 3, 12, tzinfo=UTC))
    assert found["ip7"].delivered == 1 and found["ip7"].providers == {"google": 1}
