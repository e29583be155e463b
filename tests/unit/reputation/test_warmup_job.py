"""The warm-up job's plain parts: figures per IP across hosts, and the postfix role's variables."""

from __future__ import annotations

from datetime import UTC, datetime

from modules.reputation.warmup import Caps, IpState, WarmupPlan
from modules.reputation.warmup_job import HostLog, figures_for, host_caps
from modules.reputation.warmup_store import StoredPlan

NOW = datetime(2025, 6, 3, 12, 0, tzinfo=UTC)
LINES = [
    "Jun  3 10:00:01 mx-1 postfix/smtp-ip1/smtp[81]: 4A1: to=<a@gmail.com>, relay=x[192.0.2.1]:25, delay=1, "
    "delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
    "Jun  3 10:00:02 mx-1 postfix/smtp-ip2/smtp[82]: 4A2: to=<b@example.org>, relay=none, delay=1, "
    "delays=0/0/1/0, dsn=4.4.1, status=deferred (connect to example.org: Connection timed out)",
    "Jun  3 10:00:03 mx-1 postfix/relay/smtp[83]: 4A3: to=<c@example.org>, relay=y[192.0.2.2]:25, delay=1, "
    "delays=0/0/0/1, dsn=5.1.1, status=bounced (host y said: 550 no such user)",
    "Jun  2 09:00:00 mx-1 postfix/smtp-ip1/smtp[80]: 4A0: to=<d@example.org>, relay=x[192.0.2.1]:25, delay=1, "
    "delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
]


def test_figures_add_up_per_ip_and_the_shared_relay_counts_for_the_default_ip():
    logs = [HostLog(LINES, {"ip1": "203.0.113.1", "ip2": "203.0.113.2"}, default="ip1")]
    one = figures_for(logs, "203.0.113.1", datetime(2025, 6, 3, tzinfo=UTC), NOW)
    assert (one.delivered, one.deferred, one.bounced) == (1, 0, 1)
    assert one.providers == {"google": 1}
    assert one.last_sent_at == datetime(2025, 6, 3, 10, 0, 1, tzinfo=UTC)
    two = figures_for(logs, "203.0.113.2", None, NOW)
    assert (two.delivered, two.deferred, two.bounced) == (0, 1, 0)
    assert figures_for(logs, "198.51.100.1", None, NOW).delivered == 0


def test_host_caps_give_the_role_each_ips_day_hourly_and_daily_caps():
    plan = WarmupPlan()
    stored = [
        StoredPlan(
            "203.0.113.1", "warming", plan, IpState(day=3), Caps(3, 340, 34, {"google": 102}), None, None
        ),
        StoredPlan("203.0.113.2", "available", None, None, None, None, None),
    ]
    ips = [
        {"name": "ip1", "address": "203.0.113.1", "helo_name": "mx-1.example.net", "domains": ["a.example"]},
        {"name": "ip2", "address": "203.0.113.2", "helo_name": "mx-2.example.net", "domains": ["b.example"]},
    ]
    found = host_caps(stored, ips)
    assert found["postfix_sending_ips"][0] == {**ips[0], "warmup_stage": 3, "hourly_cap": 34}
    assert found["postfix_sending_ips"][1] == ips[1]
    assert found["postfix_warmup_daily_caps"] == [
        {"name": "ip1", "daily_cap": 340, "provider_caps": {"google": 102}}
    ]
