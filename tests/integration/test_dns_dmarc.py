"""DMARCbis records, deliverable report addresses and HELO SPF, published to a real BIND and verified there.

The test has its own BIND (tests.support.dns.private_bind) with the zones of a small stack plus two
"external" zones that stand for other organizations: ``reports.example`` (an outside report receiver,
published out of band, as its owner would) and ``nomail.example`` (exists, receives no mail). checkdmarc,
the reference checker, reads the same records through a resolver pointed at that server.
"""

from __future__ import annotations

import checkdmarc.utils
import dns.resolver
import pytest
from checkdmarc.dmarc import check_dmarc

from modules.config.loader import validate_config
from modules.dns.dkim import generate_key
from modules.dns.generate import NodeAddresses, check_mail_dns, plan_mail_dns
from modules.dns.records import reverse_name
from modules.dns.resources import DnsRecordSetProvider
from modules.dns.rfc2136 import Change
from modules.dns.verify import CHECKS, verify
from tests.support.dns import lookup, out_of_band, private_bind, provider_env, recordset_props

pytestmark = pytest.mark.services

OURS = ["penguinmails.test", "acme.test", "globex.test", "18.198.in-addr.arpa"]
EXTERNAL = ["reports.example", "nomail.example"]
IP = "198.18.0.21"
HELO = "mx-01.fleet.penguinmails.test"
PUBLIC = generate_key()[1]


def stack_config():
    return validate_config(
        {
            "fleet": {"nodes": 1, "rdns_domain": "fleet.penguinmails.test"},
            "dns": {"zones": [{"name": zone} for zone in OURS]},
            "tenants": [
                {
                    "slug": "acme",
                    "domains": [{"name": "acme.test", "dmarc": {"policy": "quarantine", "testing": True}}],
                },
                {
                    "slug": "globex",
                    "domains": [
                        {
                            "name": "globex.test",
                            "dkim_selector": "gx1",
                            "dmarc": {
                                "policy": "reject",
                                "np": "reject",
                                "rua": ["mailto:agg@reports.example"],
                            },
                        }
                    ],
                },
            ],
            "mail": {"reports": {"domain": "penguinmails.test", "node": 1}},
        }
    )


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The stack's records applied through the real provider, the external zones set by their 'owners'."""
    with private_bind(tmp_path_factory.mktemp("bind-dmarc"), OURS + EXTERNAL, key_name="pm-dmarc") as bind:
        env = provider_env(bind)
        mp = pytest.MonkeyPatch()
        for key, value in env.items():
            mp.setenv(key, value)
        try:
            # The outside receiver has published its MX and consent before the stack names it.
            out_of_band(
                bind,
                "reports.example",
                Change("add", "reports.example", "MX", "10 mx.reports.example.", 300),
                Change("add", "mx.reports.example", "A", "198.18.9.9", 300),
                Change("add", "globex.test._report._dmarc.reports.example", "TXT", "v=DMARC1", 300),
            )
            out_of_band(bind, "nomail.example", Change("add", "www.nomail.example", "A", "198.18.9.8", 300))
            config = stack_config()
            plan = plan_mail_dns(
                config, {1: NodeAddresses(IP)}, {("acme.test", "pm1"): PUBLIC, ("globex.test", "gx1"): PUBLIC}
            )
            provider = DnsRecordSetProvider()
            for zone, records in plan.records.items():
                checked = provider.check({}, recordset_props(bind, zone, [r.to_dict() for r in records]))
                assert checked.failures == [], [f.reason for f in checked.failures]
                provider.create(checked.inputs)
            yield {"bind": bind, "config": config, "plan": plan}
        finally:
            mp.undo()


# No host serves the MTA-STS policy here: that check fetches it over HTTPS (tests/integration/test_mta_sts.py).
DNS_ONLY = [check for check in CHECKS if check != "MTA-STS"]


def _verify(published, checks=None):
    found = verify(published["plan"].expectations, lookup(published["bind"]), checks=checks or DNS_ONLY)
    return {r.domain: r for r in found}


def test_the_generated_records_pass_every_check_on_the_live_server(published):
    reports = _verify(published)
    for report in reports.values():
        assert report.passed, (report.domain, report.failures())
    acme = reports["acme.test"].as_dict()
    assert acme["DMARC"]["reason"] == "p=quarantine; t=y"
    assert acme["REPORTS"]["reason"] == (
        "deliverable: dmarc-reports@penguinmails.test, tlsrpt@penguinmails.test"
    )
    assert acme["HELO"]["reason"] == f"{HELO}: v=spf1 a -all; ↔ {IP}"
    assert "agg@reports.example" in reports["globex.test"].as_dict()["REPORTS"]["reason"]


def test_preview_validation_resolves_the_external_receiver_through_the_server(published):
    bind = published["bind"]
    # The same config checked before anything exists: the outside receiver is looked up on the server.
    check_mail_dns(published["config"], lookup(bind))


def _checkdmarc(bind, domain):
    checkdmarc.utils.DNS_CACHE.clear()  # it caches answers process-wide; records change between tests
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [bind.host]
    resolver.port = bind.port
    return check_dmarc(domain, resolver=resolver, timeout=3, retries=1)


@pytest.mark.parametrize("domain", ["acme.test", "globex.test"])
def test_checkdmarc_finds_no_removed_tag_and_no_undeliverable_report_address(published, domain):
    result = _checkdmarc(published["bind"], domain)
    assert result["valid"] is True, result
    warnings = " | ".join(result["warnings"])
    assert "removed in RFC 9989" not in warnings, warnings
    assert "MX" not in warnings, warnings
    assert "authoriz" not in warnings.lower(), warnings


def test_checkdmarc_does_see_the_problems_this_change_removes(published):
    """The probe is sensitive: the old record shape (pct, a report domain without MX) is flagged."""
    bind = published["bind"]
    old = "v=DMARC1; p=quarantine; pct=10; rua=mailto:dmarc-reports@nomail.example"
    new = "v=DMARC1; p=quarantine; t=y; rua=mailto:dmarc-reports@penguinmails.test"
    out_of_band(
        bind,
        "acme.test",
        Change("delete", "_dmarc.acme.test", "TXT", new),
        Change("add", "_dmarc.acme.test", "TXT", old, 300),
    )
    auth = Change("add", "acme.test._report._dmarc.nomail.example", "TXT", "v=DMARC1", 300)
    out_of_band(bind, "nomail.example", auth)
    try:
        result = _checkdmarc(bind, "acme.test")
        warnings = " | ".join(result["warnings"])
        assert result["valid"] is True, result
        assert "Support for the pct tag was removed in RFC 9989" in warnings
        assert "has no MX records" in warnings or "Failed to retrieve MX records" in warnings
        (report,) = [r for r in verify(published["plan"].expectations[:1], lookup(bind))]
        failed = {r.check: r.reason for r in report.failures()}
        assert failed["REPORTS"] == (
            "DMARC rua mailto:dmarc-reports@nomail.example: nomail.example has no MX (nor A/AAAA) record"
        )
        assert "warning: pct=10: use t=y" in report.as_dict()["DMARC"]["reason"]
    finally:
        out_of_band(
            bind,
            "acme.test",
            Change("delete", "_dmarc.acme.test", "TXT", old),
            Change("add", "_dmarc.acme.test", "TXT", new, 300),
        )
        out_of_band(bind, "nomail.example", Change("delete", auth.name, "TXT", auth.value))


def test_a_report_receiver_without_authorisation_fails_in_one_line(published):
    bind = published["bind"]
    record = Change("delete", "globex.test._report._dmarc.reports.example", "TXT", "v=DMARC1")
    out_of_band(bind, "reports.example", record)
    try:
        report = _verify(published, ["REPORTS"])["globex.test"]
        assert [(r.check, r.reason) for r in report.failures()] == [
            (
                "REPORTS",
                "DMARC rua mailto:agg@reports.example: no authorisation record "
                "globex.test._report._dmarc.reports.example TXT v=DMARC1",
            )
        ]
    finally:
        out_of_band(bind, "reports.example", Change("add", record.name, "TXT", record.value, 300))


def test_a_helo_name_without_spf_fails(published):
    bind = published["bind"]
    out_of_band(bind, "penguinmails.test", Change("delete", HELO, "TXT", "v=spf1 a -all"))
    try:
        report = _verify(published, ["HELO"])["acme.test"]
        assert [r.reason for r in report.failures()] == [f"HELO name {HELO} has 0 SPF records; one is needed"]
    finally:
        out_of_band(bind, "penguinmails.test", Change("add", HELO, "TXT", "v=spf1 a -all", 300))
    assert _verify(published, ["HELO"])["acme.test"].passed


def test_a_ptr_that_names_another_host_fails_fcrdns(published):
    bind = published["bind"]
    name = reverse_name(IP)
    out_of_band(
        bind,
        "18.198.in-addr.arpa",
        Change("delete", name, "PTR", f"{HELO}."),
        Change("add", name, "PTR", "mail.acme.test.", 300),
    )
    try:
        report = _verify(published, ["HELO", "PTR"])["acme.test"]
        assert {r.check: r.reason for r in report.failures()} == {
            "HELO": f"PTR of {IP} is mail.acme.test, not the HELO name {HELO}",
            "PTR": f"{IP} PTR is mail.acme.test, expected {HELO}",
        }
    finally:
        out_of_band(
            bind,
            "18.198.in-addr.arpa",
            Change("delete", name, "PTR", "mail.acme.test."),
            Change("add", name, "PTR", f"{HELO}.", 300),
        )
