"""Verification against a lookup table built from a plan: every check passes, then each one fails."""

from __future__ import annotations

import pytest

from modules.config.loader import validate_config
from modules.dns.dkim import generate_key
from modules.dns.generate import NodeAddresses, plan_mail_dns
from modules.dns.lookup import StaticLookup
from modules.dns.sts_fetch import PolicyFetcher
from modules.dns.verify import CHECKS, expectations_from_output, verify
from tests.support.mta_sts import LabCa, Served, policy_server

PUBLIC = generate_key()[1]
OTHER = generate_key()[1]


def setup():
    config = validate_config(
        {
            "fleet": {"nodes": 1, "rdns_domain": "fleet.acme.test"},
            "dns": {"zones": [{"name": "acme.test"}, {"name": "18.198.in-addr.arpa"}]},
            "tenants": [{"slug": "acme", "domains": [{"name": "acme.test", "dmarc": {"policy": "reject"}}]}],
        }
    )
    plan = plan_mail_dns(config, {1: NodeAddresses("198.18.0.1")}, {("acme.test", "pm1"): PUBLIC})
    table = StaticLookup()
    for record in plan.all_records():
        table.add(record.name, record.type, record.values)
    return plan, table


def test_a_correctly_published_domain_passes_every_check(tmp_path):
    plan, table = setup()
    # MTA-STS is fetched for real: a TLS server on loopback serves the policy, under a CA of the test.
    ca = LabCa()
    table.table.pop(("mta-sts.acme.test", "CNAME"))
    table.add("mta-sts.acme.test", "A", ["127.0.0.1"])
    served = Served(plan.mta_sts_policies["acme.test"].encode())
    with policy_server(tmp_path, *ca.issue(["mta-sts.acme.test"]), served) as port:
        fetcher = PolicyFetcher(str(ca.write(tmp_path / "ca.pem")), port=port)
        (report,) = verify(plan.expectations, table, fetcher=fetcher)
    assert [r.check for r in report.results] == list(CHECKS)
    assert report.passed, report.failures()
    assert report.as_dict()["PTR"]["reason"] == "198.18.0.1 ↔ mx-01.fleet.acme.test"


@pytest.mark.parametrize(
    ("check", "name", "rtype", "values", "fragment"),
    [
        ("SPF", "acme.test", "TXT", ["v=spf1 ip4:192.0.2.99 -all"], "198.18.0.1 gets 'fail'"),
        (
            "DKIM",
            "pm1._domainkey.acme.test",
            "TXT",
            [f"v=DKIM1; k=rsa; p={OTHER}"],
            "not the one the mail hosts sign",
        ),
        ("DMARC", "_dmarc.acme.test", "TXT", ["v=DMARC1; p=none"], "expected p=reject"),
        ("MX", "mail.acme.test", "A", ["192.0.2.50"], "resolves to 192.0.2.50, not 198.18.0.1"),
        ("MTA-STS", "_mta-sts.acme.test", "TXT", ["v=STSv1; id=bad-id"], "id= must be"),
        ("TLS-RPT", "_smtp._tls.acme.test", "TXT", ["v=TLSRPTv1; rua=nowhere"], "is not a mailto"),
        ("PTR", "1.0.18.198.in-addr.arpa", "PTR", ["elsewhere.acme.test."], "expected mx-01.fleet.acme.test"),
        (
            "REPORTS",
            "_dmarc.acme.test",
            "TXT",
            ["v=DMARC1; p=reject; rua=mailto:d@nomail.test"],
            "DMARC rua mailto:d@nomail.test: nomail.test has no MX (nor A/AAAA) record",
        ),
        (
            "REPORTS",
            "_smtp._tls.acme.test",
            "TXT",
            ["v=TLSRPTv1; rua=mailto:tls@nomail.test"],
            "TLS-RPT rua mailto:tls@nomail.test: nomail.test has no MX",
        ),
        ("HELO", "mx-01.fleet.acme.test", "TXT", ["site-verification=1"], "has 0 SPF records"),
        ("HELO", "mx-01.fleet.acme.test", "TXT", ["v=spf1 -all"], "gives 198.18.0.1 'fail'"),
        (
            "HELO",
            "1.0.18.198.in-addr.arpa",
            "PTR",
            ["mail.acme.test."],
            "PTR of 198.18.0.1 is mail.acme.test, not the HELO name mx-01.fleet.acme.test",
        ),
    ],
)
def test_each_check_fails_with_its_reason(check, name, rtype, values, fragment):
    plan, table = setup()
    table.table[(name, rtype)] = tuple(values)
    (report,) = verify(plan.expectations, table)
    failed = {r.check: r.reason for r in report.failures()}
    assert check in failed and fragment in failed[check], failed


def test_reports_pass_when_deliverable_and_authorised_and_fail_without_the_authorisation():
    plan, table = setup()
    table.table[("_dmarc.acme.test", "TXT")] = ("v=DMARC1; p=reject; pct=50; rua=mailto:d@reports.example",)
    table.add("reports.example", "MX", ["10 mx.reports.example."])
    (report,) = verify(plan.expectations, table, checks=["DMARC", "REPORTS"])
    assert [(r.check, r.passed) for r in report.results] == [("DMARC", True), ("REPORTS", False)]
    # The legacy tag does not fail the check, but the reason says what to change.
    assert "warning: pct=50: use t=y" in report.results[0].reason
    assert report.results[1].reason == (
        "DMARC rua mailto:d@reports.example: no authorisation record "
        "acme.test._report._dmarc.reports.example TXT v=DMARC1"
    )
    table.add("acme.test._report._dmarc.reports.example", "TXT", ["v=DMARC1"])
    (report,) = verify(plan.expectations, table, checks=["REPORTS"])
    assert report.passed and "d@reports.example" in report.results[0].reason


def test_helo_name_passes_with_its_own_spf_and_matching_ptr():
    plan, table = setup()
    assert table.table[("mx-01.fleet.acme.test", "TXT")] == ("v=spf1 a -all",)
    (report,) = verify(plan.expectations, table, checks=["HELO"])
    assert report.passed, report.failures()
    del table.table[("mx-01.fleet.acme.test", "A")]
    (report,) = verify(plan.expectations, table, checks=["HELO"])
    assert "gives 198.18.0.1 'fail'" in report.results[0].reason


def test_expectations_survive_the_trip_through_a_stack_output():
    plan, _ = setup()
    exp = plan.expectations[0]
    item = {
        "domain": exp.domain,
        "mail_host": exp.mail_host,
        "sending_ips": list(exp.sending_ips),
        "dkim_keys": [list(k) for k in exp.dkim_keys],
        "dmarc_policy": exp.dmarc_policy,
        "ptr_host": exp.ptr_host,
        "mta_sts_policy": exp.mta_sts_policy,
    }
    assert expectations_from_output([item]) == [exp]
