"""Certificate name planning: node name first, mail.<d> and mta-sts.<d> per domain, every problem at once."""

from __future__ import annotations

import pytest

from modules.acme.names import MAX_NAMES, challenge_names, host_names, plan_for_stack, plan_names
from modules.config.model import StackConfig
from modules.errors import ValidationError


def test_host_names_put_the_node_first_then_each_domain_sorted_and_deduplicated():
    assert host_names("MX-01.Fleet.example.net.", ["b.example", "a.example", "b.example"]) == [
        "mx-01.fleet.example.net",
        "mail.a.example",
        "mta-sts.a.example",
        "mail.b.example",
        "mta-sts.b.example",
    ]


def test_a_host_without_domains_certifies_its_own_name_only():
    assert host_names("mx-02.fleet.example.net", []) == ["mx-02.fleet.example.net"]


def test_challenge_names_are_under_acme_challenge():
    assert challenge_names(["mail.a.example"]) == ["_acme-challenge.mail.a.example"]


def test_plan_names_lists_every_problem_at_once():
    with pytest.raises(ValidationError) as caught:
        plan_names(
            {"mx-01": "mx-01.fleet.example.net", "mx-02": "", "mx-03": "mx-03.fleet.example.net"},
            {"mx-01": ["other.org"], "mx-03": [f"d{i}.example.net" for i in range(50)]},
            ["example.net"],
        )
    reasons = caught.value.reasons
    assert "mx-01: mail.other.org lies in no zone of dns.zones (DNS-01 could not be answered)" in reasons
    assert "mx-01: mta-sts.other.org lies in no zone of dns.zones (DNS-01 could not be answered)" in reasons
    assert "mx-02: no fully qualified name (set fleet.rdns_domain)" in reasons
    assert any(
        r.startswith(f"mx-03: 101 names on one certificate, more than the CA's limit of {MAX_NAMES}")
        for r in reasons
    )
    assert caught.value.subject == "mail.acme certificate names"


def test_plan_names_accepts_49_domains_on_a_host():
    plan = plan_names(
        {"mx-01": "mx-01.example.net"}, {"mx-01": [f"d{i}.example.net" for i in range(49)]}, ["example.net"]
    )
    assert len(plan["mx-01"]) == MAX_NAMES - 1


def test_plan_for_stack_follows_fleet_names_and_sending_nodes():
    config = StackConfig.model_validate(
        {
            "fleet": {"nodes": 2, "rdns_domain": "fleet.example.net"},
            "dns": {"zones": [{"name": "example.net"}, {"name": "acme.test"}]},
            "tenants": [{"slug": "acme", "domains": [{"name": "acme.test", "sending_node": 2}]}],
            "mail": {"acme": {"contact_email": "hostmaster@example.net"}},
        }
    )
    assert plan_for_stack(config) == {
        "mx-01": ["mx-01.fleet.example.net"],
        "mx-02": ["mx-02.fleet.example.net", "mail.acme.test", "mta-sts.acme.test"],
    }
