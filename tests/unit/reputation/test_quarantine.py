from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modules.reputation.quarantine import Assignment, IpState, plan_transports, sending_ip_domains

STATUSES = ["warmed", "warming", "quarantined", "available", "burned"]


def test_domains_of_a_quarantined_ip_move_to_a_warmed_ip_of_their_tenant():
    assignments = [Assignment("a.example", "t1", "192.0.2.1"), Assignment("b.example", "t1", "192.0.2.1")]
    states = {
        "192.0.2.1": IpState("t1", "quarantined"),
        "192.0.2.2": IpState("t1", "warmed"),
        "192.0.2.3": IpState("t1", "warmed"),
        "192.0.2.4": IpState("t2", "warmed"),
        "192.0.2.5": IpState("t1", "warming"),
    }
    plan = plan_transports(assignments, states)
    # Spread over the tenant's warmed IPs, never the other tenant's or the warming one.
    assert plan == {"a.example": "192.0.2.2", "b.example": "192.0.2.3"}


def test_domains_pause_when_their_tenant_has_no_warmed_ip_left():
    plan = plan_transports(
        [Assignment("a.example", "t1", "192.0.2.1")],
        {"192.0.2.1": IpState("t1", "quarantined"), "192.0.2.9": IpState("t2", "warmed")},
    )
    assert plan == {"a.example": None}
    assert sending_ip_domains(plan) == ({}, ["a.example"])


def test_a_cleared_ip_gets_its_domains_back():
    plan = plan_transports(
        [Assignment("a.example", "t1", "192.0.2.1")], {"192.0.2.1": IpState("t1", "warming")}
    )
    assert plan == {"a.example": "192.0.2.1"}


def test_a_domain_assigned_twice_is_refused():
    with pytest.raises(ValueError, match=r"a\.example"):
        plan_transports(
            [Assignment("a.example", "t1", "192.0.2.1"), Assignment("a.example", "t1", "192.0.2.2")], {}
        )


ips = st.sampled_from([f"192.0.2.{n}" for n in range(1, 9)])
tenants = st.sampled_from(["t1", "t2", "t3"])


@st.composite
def fleets(draw):
    states = draw(st.dictionaries(ips, st.builds(IpState, tenants, st.sampled_from(STATUSES)), max_size=8))
    names = draw(st.lists(st.from_regex(r"[a-e]{1,3}\.example", fullmatch=True), unique=True, max_size=12))
    assignments = [Assignment(name, draw(tenants), draw(ips)) for name in names]
    return assignments, states


@settings(max_examples=300, deadline=None)
@given(fleets())
def test_plan_never_crosses_tenants_or_uses_a_quarantined_or_cold_ip_for_a_move(fleet):
    assignments, states = fleet
    plan = plan_transports(assignments, states)
    assert set(plan) == {a.domain for a in assignments}
    for a in assignments:
        target = plan[a.domain]
        tenant_warmed = [ip for ip, s in states.items() if s.tenant == a.tenant and s.status == "warmed"]
        if target is None:
            # Paused only when its own IP is unusable and the tenant has no warmed IP left.
            assert not tenant_warmed
            assert a.ip not in states or states[a.ip].quarantined or states[a.ip].tenant != a.tenant
            continue
        state = states[target]
        assert state.tenant == a.tenant, "moved to another tenant's IP"
        assert not state.quarantined, "sends through a quarantined IP"
        if target != a.ip:
            assert state.status == "warmed", "moved onto an IP that is not warmed"
        else:
            assert not states[a.ip].quarantined
