"""The generator: what the stack config turns into, per zone, and the preview-time check of it all."""

from __future__ import annotations

import pytest

from modules.config.loader import validate_config
from modules.dns.dkim import dkim_txt, generate_key
from modules.dns.errors import DnsValidationError
from modules.dns.generate import NodeAddresses, check_mail_dns, plan_mail_dns, report_mailboxes
from modules.dns.lookup import StaticLookup
from modules.dns.validators import validate_records

PUBLIC = generate_key()[1]


def stack(**overrides):
    values = {
        "fleet": {"nodes": 2, "rdns_domain": "fleet.penguinmails.test"},
        "dns": {
            "ttl": 600,
            "zones": [{"name": "penguinmails.test"}, {"name": "acme.test"}, {"name": "18.198.in-addr.arpa"}],
        },
        "tenants": [
            {
                "slug": "acme",
                "domains": [
                    {
                        "name": "acme.test",
                        "dmarc": {"policy": "quarantine", "rua": ["mailto:dmarc@penguinmails.test"]},
                    },
                    {
                        "name": "news.acme.test",
                        "sending_node": 2,
                        "dkim_selector": "pm2",
                        "dkim_previous_selectors": ["pm1"],
                    },
                ],
            }
        ],
        "mail": {"reports": {"domain": "penguinmails.test"}},
    }
    values.update(overrides)
    return validate_config(values)


NODES = {1: NodeAddresses("198.18.0.1"), 2: NodeAddresses("198.18.0.2", "2001:db8::2")}
KEYS = {("acme.test", "pm1"): PUBLIC, ("news.acme.test", "pm2"): PUBLIC, ("news.acme.test", "pm1"): PUBLIC}


def by_key(plan):
    return {(r.name, r.type): r for r in plan.all_records()}


def test_every_mail_record_is_generated_for_a_sending_domain():
    plan = plan_mail_dns(stack(), NODES, KEYS)
    records = by_key(plan)
    assert records[("acme.test", "MX")].values == ("10 mail.acme.test.",)
    assert records[("mail.acme.test", "A")].values == ("198.18.0.1",)
    assert records[("acme.test", "TXT")].values == ("v=spf1 ip4:198.18.0.1 ~all",)
    assert records[("pm1._domainkey.acme.test", "TXT")].values == (dkim_txt(PUBLIC),)
    assert records[("_dmarc.acme.test", "TXT")].values == (
        "v=DMARC1; p=quarantine; rua=mailto:dmarc@penguinmails.test",
    )
    assert records[("_mta-sts.acme.test", "TXT")].values[0].startswith("v=STSv1; id=")
    assert records[("mta-sts.acme.test", "CNAME")].values == ("mail.acme.test.",)
    assert records[("_smtp._tls.acme.test", "TXT")].values == (
        "v=TLSRPTv1; rua=mailto:tlsrpt@penguinmails.test",
    )
    # Reports go to another domain we host: its consent record is published there.
    assert ("acme.test._report._dmarc.penguinmails.test", "TXT") in records
    assert all(record.ttl == 600 for record in records.values())
    assert "version: STSv1\r\nmode: testing\r\nmx: mail.acme.test\r\n" in plan.mta_sts_policies["acme.test"]


def test_sending_ips_get_a_ptr_that_matches_their_host_name():
    plan = plan_mail_dns(stack(), NODES, KEYS)
    records = by_key(plan)
    assert plan.ptr == {
        "198.18.0.1": "mx-01.fleet.penguinmails.test",
        "198.18.0.2": "mx-02.fleet.penguinmails.test",
        "2001:db8::2": "mx-02.fleet.penguinmails.test",
    }
    assert records[("1.0.18.198.in-addr.arpa", "PTR")].values == ("mx-01.fleet.penguinmails.test.",)
    assert records[("mx-01.fleet.penguinmails.test", "A")].values == ("198.18.0.1",)
    assert records[("mx-02.fleet.penguinmails.test", "AAAA")].values == ("2001:db8::2",)
    assert "1.0.18.198.in-addr.arpa" in [r.name for r in plan.records["18.198.in-addr.arpa"]]


def test_a_dual_stack_node_publishes_both_families_in_spf_and_address_records():
    records = by_key(plan_mail_dns(stack(), NODES, KEYS))
    assert records[("news.acme.test", "TXT")].values == ("v=spf1 ip4:198.18.0.2 ip6:2001:db8::2 ~all",)
    assert records[("mail.news.acme.test", "AAAA")].values == ("2001:db8::2",)


def test_rotation_keeps_the_replaced_selector_until_its_retire_time():
    retire = {("news.acme.test", "pm1"): "2026-12-01T00:00:00+00:00"}
    plan = plan_mail_dns(stack(), NODES, KEYS, retire)
    records = by_key(plan)
    assert records[("pm2._domainkey.news.acme.test", "TXT")].not_after is None
    assert records[("pm1._domainkey.news.acme.test", "TXT")].not_after == "2026-12-01T00:00:00+00:00"
    assert plan.signing_selectors["news.acme.test"] == "pm2"
    assert [s for s, _ in plan.expectations[1].dkim_keys] == ["pm2", "pm1"]


def test_generated_plan_passes_every_validator():
    plan = plan_mail_dns(stack(), NODES, KEYS)
    assert validate_records(plan.all_records(), StaticLookup(), zones=list(plan.records)) == []


def test_check_mail_dns_reports_every_problem_before_anything_exists():
    config = stack(
        dns={
            "zones": [
                {"name": "penguinmails.test"},
                {
                    "name": "acme.test",
                    "records": [{"name": "@", "type": "CNAME", "values": ["elsewhere.test"]}],
                },
            ]
        }
    )
    config = config.model_copy(
        update={
            "tenants": [
                validate_config(
                    {
                        "dns": {"zones": [{"name": "acme.test"}]},
                        "fleet": {"nodes": 1},
                        "tenants": [
                            {
                                "slug": "acme",
                                "domains": [{"name": "acme.test", "spf_include": ["_spf.loop.test"]}],
                            }
                        ],
                    }
                ).tenants[0]
            ]
        }
    )
    loop = StaticLookup({("_spf.loop.test", "TXT"): ["v=spf1 include:_spf.loop.test -all"]})
    with pytest.raises(DnsValidationError) as error:
        check_mail_dns(config, loop)
    reasons = error.value.reasons
    assert any(
        r.startswith("acme.test: acme.test CNAME: a CNAME cannot sit at the zone apex") for r in reasons
    )
    assert any("acme.test TXT (SPF): include:_spf.loop.test loops back" in r for r in reasons)


def test_extra_records_are_published_in_their_zone():
    config = stack(
        dns={
            "zones": [
                {
                    "name": "penguinmails.test",
                    "records": [{"name": "www", "type": "A", "ttl": 120, "values": ["192.0.2.80"]}],
                },
                {"name": "acme.test"},
            ]
        }
    )
    plan = plan_mail_dns(config, NODES, KEYS)
    www = by_key(plan)[("www.penguinmails.test", "A")]
    assert www.ttl == 120 and www in plan.records["penguinmails.test"]


def test_reports_land_in_the_stacks_mailboxes_whose_domain_gets_an_mx():
    config = stack()
    records = by_key(plan_mail_dns(config, NODES, KEYS))
    assert records[("penguinmails.test", "MX")].values == ("10 mail.penguinmails.test.",)
    assert records[("mail.penguinmails.test", "A")].values == ("198.18.0.1",)
    # news.acme.test names no rua: it gets the report mailbox, with t=y absent and no legacy tag.
    assert records[("_dmarc.news.acme.test", "TXT")].values == (
        "v=DMARC1; p=none; rua=mailto:dmarc-reports@penguinmails.test",
    )
    assert report_mailboxes(config) == {
        1: ["dmarc-reports@penguinmails.test", "dmarc@penguinmails.test", "tlsrpt@penguinmails.test"]
    }


def test_helo_names_get_an_spf_record_of_their_own():
    records = by_key(plan_mail_dns(stack(), NODES, KEYS))
    assert records[("mx-01.fleet.penguinmails.test", "TXT")].values == ("v=spf1 a -all",)
    assert records[("mx-02.fleet.penguinmails.test", "TXT")].values == ("v=spf1 a -all",)


def test_a_report_address_in_a_zone_of_ours_that_receives_no_mail_fails_the_preview():
    config = stack(mail={})  # no mail.reports: penguinmails.test has no MX, as measured on the dev stack
    with pytest.raises(DnsValidationError) as caught:
        check_mail_dns(config, StaticLookup())
    assert any(
        "rua mailto:dmarc@penguinmails.test: penguinmails.test has no MX" in r for r in caught.value.reasons
    )
