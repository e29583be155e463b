"""Records for additional sending IPs: their own A, HELO SPF and PTR (FCrDNS), and each domain's SPF naming
the IP it leaves from (plus its tenant's other IPs on the node); a stack without any is unchanged."""

from __future__ import annotations

from modules.config.loader import validate_config
from modules.dns.dkim import generate_key
from modules.dns.generate import NodeAddresses, plan_mail_dns

PUBLIC = generate_key()[1]
MAIN = NodeAddresses("10.88.0.5")


def config(additional: dict | None = None, **pins):
    return validate_config(
        {
            "fleet": {"nodes": 1, "rdns_domain": "fleet.x.test", "additional_ips": additional or {}},
            "dns": {"zones": [{"name": "x.test"}, {"name": "88.10.in-addr.arpa"}]},
            "tenants": [
                {"slug": "acme", "domains": [{"name": "a.x.test", **pins}, {"name": "b.x.test"}]},
                {"slug": "beta", "domains": [{"name": "c.x.test"}]},
            ],
        },
        stack="t",
    )


def records(plan) -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for record in plan.all_records():
        found.setdefault((record.name, record.type), []).extend(record.values)
    return found


def plan_for(cfg):
    keys = {(d.name, d.dkim_selector): PUBLIC for _, d in cfg.sending_domains()}
    return plan_mail_dns(cfg, {1: MAIN}, keys)


def spf(found, name: str) -> str:
    return next(v for v in found[(name, "TXT")] if v.startswith("v=spf1"))


def test_a_pinned_domain_authorises_its_ip_and_the_ip_has_fcrdns():
    plan = plan_for(config({"1": ["10.88.254.9"]}, sending_ip="ip2"))
    found = records(plan)
    assert found[("mx-01-2.fleet.x.test", "A")] == ["10.88.254.9"]
    assert found[("mx-01-2.fleet.x.test", "TXT")] == ["v=spf1 a -all"]
    assert found[("9.254.88.10.in-addr.arpa", "PTR")] == ["mx-01-2.fleet.x.test."]
    assert plan.ptr["10.88.254.9"] == "mx-01-2.fleet.x.test"
    assert spf(found, "a.x.test") == "v=spf1 ip4:10.88.254.9 ip4:10.88.0.5 ~all"
    assert spf(found, "b.x.test") == "v=spf1 ip4:10.88.0.5 ip4:10.88.254.9 ~all"  # acme's other IP
    assert spf(found, "c.x.test") == "v=spf1 ip4:10.88.0.5 ~all"  # another tenant: not moved there
    assert found[("mail.a.x.test", "A")] == ["10.88.0.5"]  # mail is still received on the main IP
    expected = {e.domain: (e.sending_ips, e.ptr_host) for e in plan.expectations}
    assert expected["a.x.test"] == (("10.88.254.9",), "mx-01-2.fleet.x.test")
    assert expected["b.x.test"] == (("10.88.0.5",), "mx-01.fleet.x.test")


def test_without_additional_ips_the_records_are_what_they_were():
    plain = records(plan_for(config()))
    assert spf(plain, "a.x.test") == "v=spf1 ip4:10.88.0.5 ~all"
    assert not [key for key in plain if key[0].startswith("mx-01-")]
    declared_unused = records(plan_for(config({"1": ["10.88.254.9"]})))
    assert spf(declared_unused, "a.x.test") == "v=spf1 ip4:10.88.0.5 ~all"  # no domain of acme on ip2
