"""The routes endpoint's answer: each IP's quarantine and, from the warm-up loop's last cycle, its caps.

The hosts' agents apply ``warmup`` as their caps and keep their last ones when it is null, so null must
mean "no usable data" (no cycle yet, a cycle that could not read OLTP, no plan), never a zero cap.
"""

from __future__ import annotations

import json
import urllib.request

from modules.monitoring.routes import routes_document
from modules.monitoring.warmup_loop import WarmupRound
from modules.reputation.checker import Round
from modules.reputation.dnsbl import IpVerdict, Outcome
from modules.reputation.store import Recorded
from modules.reputation.warmup import IpState, WarmupPlan
from modules.reputation.warmup_store import StoredPlan

TOKEN = "w" * 40


def _round(*ips: str) -> Round:
    rows = {ip: Recorded(ip, True, "warming", "fair", 0) for ip in ips}
    return Round(1.0, 0.1, (), tuple(IpVerdict(ip, Outcome.CLEAN, ()) for ip in ips), rows)


def _plan(ip: str, day: int, held: bool = False) -> StoredPlan:
    plan = WarmupPlan()
    return StoredPlan(ip, "warming", plan, IpState(day=day, held=held), plan.caps(day), None, None)


def test_each_planned_ip_carries_its_stored_caps_and_hold():
    cycle = WarmupRound(
        50.0,
        plans=(
            _plan("192.0.2.1", 4, held=True),
            StoredPlan("192.0.2.2", "warming", None, None, None, None, None),  # registered, no plan yet
        ),
    )
    document = routes_document("unit", _round("192.0.2.1", "192.0.2.2"), cycle)
    assert document["warmup_checked"] == 50.0 and document["checked"] == 1.0
    assert document["ips"]["192.0.2.1"] == {
        "quarantined": False,
        "status": "warming",
        "warmup": {
            "day": 4,
            "daily": 400,
            "hourly": 40,
            "providers": {"google": 120, "microsoft": 100, "yahoo": 80},
            "held": True,
        },
    }
    assert document["ips"]["192.0.2.2"]["warmup"] is None


def test_warmup_is_null_before_the_first_cycle_and_after_a_cycle_that_failed():
    failed = WarmupRound(60.0, error="OperationalError: connection refused")
    for cycle in (None, failed):
        document = routes_document("unit", _round("192.0.2.1"), cycle)
        assert document["ips"]["192.0.2.1"]["warmup"] is None and document["warmup_checked"] is None
        assert document["ips"]["192.0.2.1"]["quarantined"] is False  # the quarantine part is unchanged


def test_a_planned_ip_the_round_did_not_check_gets_its_caps_and_no_quarantine_verdict():
    document = routes_document("unit", _round("192.0.2.1"), WarmupRound(2.0, plans=(_plan("192.0.2.7", 21),)))
    assert document["ips"]["192.0.2.7"]["quarantined"] is None  # undecided: agents keep the previous state
    assert document["ips"]["192.0.2.7"]["warmup"]["daily"] == 20000


def test_no_dnsbl_round_is_still_no_answer_whatever_the_warmup_loop_has():
    assert routes_document("unit", None, WarmupRound(2.0, plans=(_plan("192.0.2.1", 3),))) is None


def test_the_exporter_serves_its_warmup_loops_last_cycle(tmp_path):
    from devenv.bind import free_port
    from modules.monitoring.exporter import Exporter, ExporterConfig

    config = ExporterConfig(stack="unit", sending_ips=[], routes_token=TOKEN)
    exporter = Exporter(config, f"127.0.0.1:{free_port()}", routes_listen=f"127.0.0.1:{free_port()}").start()
    try:
        exporter.loop.last = _round("192.0.2.1")  # neither loop runs here (no IPs, no warm-up URLs)
        exporter.warmup.last = WarmupRound(3.0, plans=(_plan("192.0.2.1", 2),))
        request = urllib.request.Request(exporter.routes.url, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            document = json.loads(answer.read())
        assert document["ips"]["192.0.2.1"]["warmup"]["daily"] == WarmupPlan().daily_cap(2)
    finally:
        exporter.stop()
