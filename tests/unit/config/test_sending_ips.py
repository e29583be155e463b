"""fleet.additional_ips and sending_ip: valid, unique addresses, pins only to the sending node's own IPs."""

from __future__ import annotations

import pytest

from modules.config import sending_ips
from modules.config.loader import validate_config
from modules.errors import ConfigError


def stack(additional: dict | None = None, domains: list | None = None, **fleet) -> dict:
    return {
        "fleet": {"nodes": 2, "rdns_domain": "fleet.x.test", "additional_ips": additional or {}, **fleet},
        "dns": {"zones": [{"name": "x.test"}]},
        "tenants": [{"slug": "acme", "domains": domains or [{"name": "a.x.test"}]}],
    }


def reasons(values: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validate_config(values, stack="t")
    return caught.value.reasons


def test_none_declared_changes_nothing():
    config = validate_config({"fleet": {"nodes": 1}})
    assert config.fleet.additional_ips == {} and config.fleet.extra_ips(1) == []
    assert validate_config(stack()).tenants[0].domains[0].sending_ip is None


def test_declared_ips_are_named_in_order_with_a_ptr_under_the_rdns_domain():
    config = validate_config(stack({"1": ["203.0.113.7", "203.0.113.8"]}), stack="t")
    assert config.fleet.extra_ips(1) == [
        ("ip2", "203.0.113.7", "mx-01-2.fleet.x.test"),
        ("ip3", "203.0.113.8", "mx-01-3.fleet.x.test"),
    ]
    assert config.fleet.extra_ips(2) == []


@pytest.mark.parametrize(
    ("additional", "words"),
    [
        ({"1": ["203.0.113.300"]}, "[1][0]: '203.0.113.300' is not an IPv4 address"),
        ({"1": ["2001:db8::1"]}, "is not an IPv4 address"),
        ({"1": ["127.0.0.2"]}, "cannot be a sending address"),
        ({"1": ["203.0.113.7"], "2": ["203.0.113.7"]}, "[2][0]: 203.0.113.7 is already declared for node 1"),
        ({"1": ["203.0.113.7", "203.0.113.7"]}, "already declared for node 1"),
    ],
)
def test_bad_addresses_name_the_field(additional, words):
    found = reasons(stack(additional))
    assert any(r.startswith("penguinmails:fleet.additional_ips:") and words in r for r in found), found


def test_a_node_that_does_not_exist_or_has_no_ptr_domain_is_refused():
    found = reasons(stack({"3": ["203.0.113.7"]}))
    assert "penguinmails:fleet.additional_ips[3]: node 3 does not exist (fleet.nodes is 2)" in found
    found = reasons(stack({"1": ["203.0.113.7"]}, rdns_domain=None))
    assert any(r.startswith("penguinmails:fleet.additional_ips[1]: needs fleet.rdns_domain") for r in found)


def test_a_pin_must_name_an_ip_of_the_domains_own_node():
    base = {"1": ["203.0.113.7"], "2": ["203.0.113.9"]}
    ok = validate_config(
        stack(
            base,
            [{"name": "a.x.test", "sending_ip": "ip2"}, {"name": "b.x.test", "sending_ip": "203.0.113.7"}],
        ),
        stack="t",
    )
    assert [sending_ips.pinned_ip(ok, d).address for _, d in ok.sending_domains()] == ["203.0.113.7"] * 2
    found = reasons(
        stack(
            base,
            [{"name": "a.x.test", "sending_ip": "203.0.113.9"}, {"name": "b.x.test", "sending_ip": "ip3"}],
        )
    )
    assert (
        "penguinmails:tenants[acme].domains[a.x.test].sending_ip: 203.0.113.9 is not an IP of its sending node 1 "
        "(that node has: main, ip2 (203.0.113.7))"
    ) in found
    assert any("domains[b.x.test].sending_ip: ip3 is not an IP" in r for r in found)
    assert any(
        "sending_ip: 'fast' is not 'main'" in r
        for r in reasons(stack(base, [{"name": "a.x.test", "sending_ip": "fast"}]))
    )


def test_spf_candidates_are_the_pinned_ip_then_the_tenants_other_ips_on_the_node():
    config = validate_config(
        {
            **stack({"1": ["203.0.113.7", "203.0.113.8"]}),
            "tenants": [
                {
                    "slug": "acme",
                    "domains": [{"name": "a.x.test", "sending_ip": "ip2"}, {"name": "b.x.test"}],
                },
                {"slug": "beta", "domains": [{"name": "c.x.test", "sending_ip": "ip3"}]},
            ],
        },
        stack="t",
    )
    by_name = {
        d.name: [ip.name for ip in sending_ips.tenant_ips(config, d)] for _, d in config.sending_domains()
    }
    assert by_name == {"a.x.test": ["ip2", "main"], "b.x.test": ["main", "ip2"], "c.x.test": ["ip3"]}
