"""The warm-up plan and decision on a simulated clock with synthetic delivery logs."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modules.reputation.warmup import Action, Figures, IpState, WarmupPlan, decide, status_for

PLAN = WarmupPlan()
T0 = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)


def healthy(caps_daily: int) -> Figures:
    """A good day: the cap delivered, 2 % deferred, 0.5 % bounced."""
    return Figures(
        delivered=caps_daily - caps_daily // 50 - caps_daily // 200,
        deferred=caps_daily // 50,
        bounced=caps_daily // 200,
    )


def simulate(plan: WarmupPlan, days: int, figures_for) -> list[tuple[datetime, int, int, str]]:
    """Run the daily job ``days`` times on a simulated clock; ``figures_for(day, caps)`` is the log."""
    now, state, seen = T0, IpState(day=1, last_advanced_at=T0, last_sent_at=T0), []
    for _ in range(days):
        now += timedelta(days=1)
        figures = figures_for(state.day, plan.caps(state.day))
        decision = decide(plan, state, now, figures)
        seen.append((now, decision.day, decision.caps.daily, str(decision.action)))
        advanced = decision.action in (Action.ADVANCE, Action.BACK_OFF, Action.REWARM)
        state = IpState(
            day=decision.day,
            held=state.held,
            last_advanced_at=now if advanced else state.last_advanced_at,
            last_sent_at=now if figures.delivered else state.last_sent_at,
        )
    return seen


def test_default_curve_goes_from_a_few_hundred_to_full_in_21_days():
    table = PLAN.table()
    assert len(table) == 21
    assert table[0].daily == 200 and table[-1].daily == 20000
    assert all(a.daily < b.daily for a, b in itertools.pairwise(table))
    assert all(c.hourly * PLAN.sending_hours >= c.daily for c in table)
    assert table[0].hourly == 20
    assert table[0].providers == {"google": 60, "microsoft": 50, "yahoo": 40}


def test_caps_rise_on_schedule_with_healthy_figures():
    seen = simulate(PLAN, 25, lambda day, caps: healthy(caps.daily))
    days = [day for _now, day, _cap, _action in seen]
    assert days[:20] == list(range(2, 22))
    assert days[20:] == [21] * 5
    assert [action for *_, action in seen][20:] == ["wait"] * 5


def test_no_advance_before_the_day_is_over():
    state = IpState(day=4, last_advanced_at=T0, last_sent_at=T0)
    decision = decide(PLAN, state, T0 + timedelta(hours=5), healthy(PLAN.daily_cap(4)))
    assert (decision.action, decision.day) == (Action.WAIT, 4)


def test_high_deferral_rate_holds_the_day():
    state = IpState(day=6, last_advanced_at=T0, last_sent_at=T0)
    decision = decide(PLAN, state, T0 + timedelta(days=1), Figures(delivered=300, deferred=200, bounced=2))
    assert decision.action == Action.HOLD and decision.day == 6
    assert "deferral rate 39.8%" in decision.reason
    assert decision.caps == PLAN.caps(6)


def test_bounces_above_the_threshold_back_off():
    state = IpState(day=10, last_advanced_at=T0, last_sent_at=T0)
    decision = decide(PLAN, state, T0 + timedelta(days=1), Figures(delivered=900, deferred=10, bounced=90))
    assert decision.action == Action.BACK_OFF
    assert decision.day == 10 - PLAN.back_off_days
    assert decision.caps.daily < PLAN.daily_cap(10)
    assert "bounce rate" in decision.reason


def test_complaints_back_off_too():
    state = IpState(day=5, last_advanced_at=T0, last_sent_at=T0)
    decision = decide(PLAN, state, T0 + timedelta(days=1), Figures(delivered=1000, complaints=5))
    assert decision.action == Action.BACK_OFF and "complaint rate" in decision.reason


def test_back_off_never_goes_below_day_one():
    state = IpState(day=2, last_advanced_at=T0, last_sent_at=T0)
    decision = decide(PLAN, state, T0 + timedelta(days=1), Figures(delivered=100, bounced=50))
    assert decision.day == 1


def test_idle_for_more_than_30_days_rewarms():
    state = IpState(day=21, last_advanced_at=T0, last_sent_at=T0)
    decision = decide(PLAN, state, T0 + timedelta(days=31), Figures())
    assert (decision.action, decision.day) == (Action.REWARM, 1)
    assert decision.caps.daily == 200
    assert decide(PLAN, state, T0 + timedelta(days=29), Figures()).action != Action.REWARM


def test_too_little_traffic_holds_instead_of_advancing():
    state = IpState(day=3, last_advanced_at=T0, last_sent_at=T0)
    decision = decide(PLAN, state, T0 + timedelta(days=1), Figures(delivered=5))
    assert decision.action == Action.HOLD and "too little to judge" in decision.reason


def test_a_held_ip_never_moves():
    state = IpState(day=7, held=True, last_advanced_at=T0, last_sent_at=T0)
    for figures in (healthy(5000), Figures(delivered=10, bounced=90), Figures()):
        decision = decide(PLAN, state, T0 + timedelta(days=60), figures)
        assert (decision.action, decision.day) == (Action.WAIT, 7)


def test_status_follows_the_day():
    assert status_for(PLAN, 1) == "warming" and status_for(PLAN, 21) == "warmed"


def test_a_plan_with_a_falling_curve_or_unknown_provider_is_refused():
    with pytest.raises(ValueError, match=r"full_daily .* below start_daily.*unknown group"):
        WarmupPlan(start_daily=500, full_daily=100, provider_shares={"icloud": 0.1})


plans = st.builds(
    WarmupPlan,
    days=st.integers(2, 40),
    start_daily=st.integers(1, 1000),
    full_daily=st.integers(1000, 200000),
    sending_hours=st.integers(1, 24),
)
figures = st.builds(
    Figures,
    delivered=st.integers(0, 300000),
    deferred=st.integers(0, 100000),
    bounced=st.integers(0, 50000),
    complaints=st.integers(0, 1000),
)
states = st.builds(
    IpState,
    day=st.integers(-3, 45),
    held=st.booleans(),
    last_advanced_at=st.none() | st.datetimes(max_value=datetime(2025, 3, 1), timezones=st.just(UTC)),
    last_sent_at=st.none() | st.datetimes(max_value=datetime(2025, 3, 1), timezones=st.just(UTC)),
)


@settings(max_examples=150, deadline=None)
@given(plans, states, figures, st.integers(0, 90 * 24))
def test_decisions_stay_within_the_plan(plan, state, found, hours):
    now = datetime(2025, 3, 1, tzinfo=UTC) + timedelta(hours=hours)
    decision = decide(plan, state, now, found)
    assert 1 <= decision.day <= plan.days
    assert decision.caps.daily <= plan.full_daily
    assert decision.caps.hourly <= plan.full_daily
    assert all(cap <= decision.caps.daily for cap in decision.caps.providers.values())
    assert decision.day <= plan.clamp(state.day) + 1
    if state.held:
        assert decision.action == Action.WAIT and decision.day == plan.clamp(state.day)
    if decision.action == Action.ADVANCE:
        assert found.rate(found.bounced) <= plan.max_bounce_rate
        assert found.rate(found.deferred) <= plan.max_deferral_rate


@settings(max_examples=50, deadline=None)
@given(plans)
def test_caps_never_fall_from_one_day_to_the_next_and_end_at_full_volume(plan):
    table = plan.table()
    assert all(a.daily <= b.daily for a, b in itertools.pairwise(table))
    assert table[-1].daily == plan.full_daily
    assert max(c.daily for c in table) == plan.full_daily
