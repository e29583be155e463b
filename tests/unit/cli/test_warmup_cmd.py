"""`penguinmails warmup`: what it refuses before and after reading the stack, and what status shows."""

from __future__ import annotations

import pytest

from modules.cli import warmup_cmd
from modules.errors import ToolkitError
from modules.reputation.warmup import Caps, IpState, WarmupPlan
from modules.reputation.warmup_store import StoredPlan

PLANS = [
    StoredPlan(
        "203.0.113.1",
        "warming",
        WarmupPlan(),
        IpState(day=3, held=True),
        Caps(3, 340, 34, {"google": 102}),
        "complaints",
        {
            "action": "hold",
            "reason": "deferral rate 30.0% above 20.0%",
            "figures": {"delivered": 70, "deferred": 30},
        },
    ),
    StoredPlan("203.0.113.2", "available", None, None, None, None, None),
]


def test_a_stack_without_the_warmup_output_says_so(monkeypatch):
    monkeypatch.setattr(warmup_cmd, "pulumi_json", lambda *a, **k: {"redis_url": "redis://x"})
    with pytest.raises(ToolkitError, match="no postgres_oltp_warmup_url output"):
        warmup_cmd.connect("dev", ".")


def test_an_unknown_ip_names_the_known_ones():
    with pytest.raises(
        ToolkitError, match=r"--ip 198.51.100.1: not a sending IP of this stack \(203.0.113.1, 203.0.113.2\)"
    ):
        warmup_cmd.select(PLANS, "198.51.100.1")


def test_status_rows_carry_day_caps_figures_and_decision():
    held, fresh = warmup_cmd.status_rows(PLANS)
    assert (held["day"], held["days"], held["daily_cap"], held["hourly_cap"]) == (3, 21, 340, 34)
    assert held["held"] and held["held_reason"] == "complaints"
    assert held["decision"] == "hold" and held["figures"]["deferred"] == 30
    assert fresh["day"] is None and fresh["decision"] is None and fresh["status"] == "available"


def test_the_plan_table_prints_every_day(capsys):
    warmup_cmd.plan_command(stack=None, cwd=".", ip=None, as_json=False)
    out = capsys.readouterr().out
    assert "  21    20000" in out and "re-warm after 30 idle days" in out
