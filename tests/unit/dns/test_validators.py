"""Mail-zone validators: every reason collected, each naming the domain and the record."""

from __future__ import annotations

import pytest

from modules.dns.dkim import dkim_txt, generate_key
from modules.dns.errors import DnsValidationError
from modules.dns.lookup import StaticLookup
from modules.dns.records import Record
from modules.dns.validators import ensure_valid, validate_records

ZONE = "acme.test"


def rec(name, rtype, *values, ttl=300):
    return Record.make(name, rtype, ttl, list(values))


def good_zone() -> list[Record]:
    return [
        rec("acme.test", "MX", "10 mail.acme.test."),
        rec("mail.acme.test", "A", "192.0.2.1"),
        rec("acme.test", "TXT", "v=spf1 ip4:192.0.2.1 ~all", "site-verification=1"),
        rec("_dmarc.acme.test", "TXT", "v=DMARC1; p=none"),
        rec("pm1._domainkey.acme.test", "TXT", dkim_txt(generate_key()[1])),
        rec("_mta-sts.acme.test", "TXT", "v=STSv1; id=abc123"),
        rec("mta-sts.acme.test", "CNAME", "mail.acme.test."),
        rec("_smtp._tls.acme.test", "TXT", "v=TLSRPTv1; rua=mailto:tls@acme.test"),
    ]


def test_a_complete_mail_zone_is_valid_without_any_network():
    assert validate_records(good_zone(), StaticLookup(), zones=[ZONE]) == []


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (
            rec("acme.test", "CNAME", "other.test."),
            "acme.test: acme.test CNAME: a CNAME cannot sit at the zone apex",
        ),
        (
            rec("mail.acme.test", "CNAME", "x.test."),
            "mail.acme.test CNAME: a CNAME cannot sit beside other records (A)",
        ),
        (rec("www.acme.test", "MX", "10 nowhere.acme.test."), "MX target nowhere.acme.test does not resolve"),
        (rec("x.acme.test", "MX", "10 mta-sts.acme.test."), "MX target mta-sts.acme.test is a CNAME"),
        (
            rec("_dmarc.acme.test", "TXT", "v=DMARC1; p=block"),
            "acme.test: _dmarc.acme.test TXT (DMARC): p=block",
        ),
        (
            rec("x._domainkey.acme.test", "TXT", "v=DKIM1; k=rsa; p=MIGfMA0="),
            "x._domainkey.acme.test TXT (DKIM):",
        ),
        (
            rec("sub.acme.test", "TXT", "v=spf1 include:gone.test -all"),
            "sub.acme.test TXT (SPF): include:gone.test",
        ),
        (rec("other.test", "A", "192.0.2.9"), "other.test A: is in none of the zones acme.test"),
        (rec("_mta-sts.x.acme.test", "TXT", "v=STSv1; id=not valid!"), "(MTA-STS): id= must be 1-32"),
        (rec("_smtp._tls.x.acme.test", "TXT", "v=TLSRPTv1"), "(TLS-RPT): rua= is missing"),
        (rec("1.2.0.192.acme.test", "PTR", "mail.acme.test."), "belongs under in-addr.arpa"),
    ],
)
def test_each_problem_names_the_domain_and_the_record(bad, expected):
    reasons = validate_records([*good_zone(), bad], StaticLookup(), zones=[ZONE])
    assert any(expected in reason for reason in reasons), reasons


def test_two_spf_records_at_one_name_are_refused():
    records = [r for r in good_zone() if not (r.name == "acme.test" and r.type == "TXT")]
    records.append(rec("acme.test", "TXT", "v=spf1 -all", "v=spf1 ~all"))
    reasons = validate_records(records, StaticLookup(), zones=[ZONE])
    assert any("2 SPF records at one name" in reason for reason in reasons)


def test_spf_includes_resolve_through_the_injected_resolver_and_are_counted():
    esp = StaticLookup(
        {("_spf.esp.test", "TXT"): ["v=spf1 " + " ".join(f"a:h{i}.esp.test" for i in range(10)) + " -all"]}
    )
    for i in range(10):
        esp.add(f"h{i}.esp.test", "A", ["198.51.100.1"])
    records = [r for r in good_zone() if not (r.name == "acme.test" and r.type == "TXT")]
    records.append(rec("acme.test", "TXT", "v=spf1 include:_spf.esp.test ~all"))
    (reason,) = validate_records(records, esp, zones=[ZONE])
    assert reason.startswith(
        "acme.test: acme.test TXT (SPF): needs 11 DNS lookups, more than the limit of 10"
    )


def test_ensure_valid_raises_once_with_every_reason():
    bad = [rec("acme.test", "CNAME", "x.test."), rec("_dmarc.acme.test", "TXT", "v=DMARC1")]
    with pytest.raises(DnsValidationError) as error:
        ensure_valid(bad, "zone acme.test", StaticLookup(), zones=[ZONE])
    assert error.value.subject == "zone acme.test"
    assert len(error.value.reasons) == 2


def test_records_whose_values_are_not_known_yet_still_count_as_present():
    records = [rec("acme.test", "MX", "10 mail.acme.test.")]
    assert validate_records(records, StaticLookup(), zones=[ZONE], present=[("mail.acme.test", "A")]) == []


def _with_dmarc(value: str) -> list[Record]:
    return [r for r in good_zone() if r.name != "_dmarc.acme.test"] + [rec("_dmarc.acme.test", "TXT", value)]


def test_a_report_address_in_a_domain_without_mx_is_refused_in_one_line():
    zone = _with_dmarc("v=DMARC1; p=none; rua=mailto:d@acme.test,mailto:r@nomail.test")
    outside = StaticLookup({("acme.test._report._dmarc.nomail.test", "TXT"): ["v=DMARC1"]})
    assert validate_records(zone, outside, zones=[ZONE]) == [
        "acme.test: _dmarc.acme.test TXT (DMARC): rua mailto:r@nomail.test: nomail.test has no MX "
        "(nor A/AAAA) record, so reports cannot be delivered"
    ]


def test_an_external_report_destination_must_authorise_the_reports():
    zone = _with_dmarc("v=DMARC1; p=none; rua=mailto:d@reports.example")
    outside = StaticLookup({("reports.example", "MX"): ["10 mx.reports.example."]})
    (reason,) = validate_records(zone, outside, zones=[ZONE])
    assert reason.endswith(
        "reports.example has not authorised reports for acme.test "
        "(acme.test._report._dmarc.reports.example TXT v=DMARC1 is missing)"
    )
    outside.add("acme.test._report._dmarc.reports.example", "TXT", ["v=DMARC1"])
    assert validate_records(zone, outside, zones=[ZONE]) == []


def test_a_tls_rpt_address_without_mx_is_refused_and_needs_no_authorisation():
    zone = [r for r in good_zone() if r.name != "_smtp._tls.acme.test"]
    zone.append(rec("_smtp._tls.acme.test", "TXT", "v=TLSRPTv1; rua=mailto:tls@gone.test"))
    (reason,) = validate_records(zone, StaticLookup(), zones=[ZONE])
    assert "(TLS-RPT): rua mailto:tls@gone.test: gone.test has no MX" in reason
    zone[-1] = rec("_smtp._tls.acme.test", "TXT", "v=TLSRPTv1; rua=mailto:tls@other.example")
    assert validate_records(zone, StaticLookup({("other.example", "A"): ["192.0.2.9"]}), zones=[ZONE]) == []
