"""MTA-STS: the policy parser, the MX-pattern matcher, and fetching a policy over real TLS on loopback."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modules.config.loader import validate_config
from modules.dns import mailauth
from modules.dns.generate import NodeAddresses, plan_mail_dns
from modules.dns.lookup import StaticLookup
from modules.dns.sts_fetch import PolicyFetcher, PolicyFetchError
from modules.dns.verify import check_mta_sts
from tests.support.mta_sts import LabCa, Served, policy_server
from tests.unit.dns.test_verify import PUBLIC

HOST = "mta-sts.acme.test"
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
hostname = st.lists(label, min_size=2, max_size=4).map(".".join)


# The parser.


def test_the_generated_policy_parses_back_to_its_parts():
    text = mailauth.mta_sts_policy("enforce", ["mail.acme.test."], 86400)
    policy, problems = mailauth.parse_sts_policy(text)
    assert problems == []
    assert policy == mailauth.StsPolicy("STSv1", "enforce", ("mail.acme.test",), 86400)


@given(
    mode=st.sampled_from(mailauth.STS_MODES),
    hosts=st.lists(hostname, min_size=1, max_size=4),
    max_age=st.integers(0, mailauth.STS_MAX_AGE_LIMIT),
)
def test_any_generated_policy_round_trips(mode, hosts, max_age):
    policy, problems = mailauth.parse_sts_policy(mailauth.mta_sts_policy(mode, hosts, max_age))
    assert problems == []
    assert (policy.mode, policy.mx, policy.max_age) == (mode, tuple(hosts), max_age)


def test_lf_line_endings_and_unknown_keys_are_accepted():
    policy, problems = mailauth.parse_sts_policy(
        "version: STSv1\nmode: testing\nmx: *.acme.test\nx-ext: 1\nmax_age: 90\n"
    )
    assert problems == [] and policy.mx == ("*.acme.test",)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("mode: enforce\r\nmx: a.test\r\nmax_age: 1\r\n", "version must be STSv1"),
        ("version: STSv2\r\nmode: enforce\r\nmx: a.test\r\nmax_age: 1\r\n", "version must be STSv1"),
        ("version: STSv1\r\nmode: strict\r\nmx: a.test\r\nmax_age: 1\r\n", "mode must be one of"),
        ("version: STSv1\r\nmode: enforce\r\nmax_age: 1\r\n", "needs at least one mx"),
        ("version: STSv1\r\nmode: enforce\r\nmx: a.test\r\n", "max_age must be"),
        ("version: STSv1\r\nmode: enforce\r\nmx: a.test\r\nmax_age: 31557601\r\n", "max_age must be"),
        ("version: STSv1\r\nmode: enforce\r\nmx: a.test\r\nmax_age: -5\r\n", "max_age must be"),
        ("version: STSv1\r\nmode: enforce\r\nmx: a..test\r\nmax_age: 1\r\n", "is not a host name"),
        ("version: STSv1\r\nmode: enforce\r\nmx: a.*.test\r\nmax_age: 1\r\n", "is not a host name"),
        ("version: STSv1\r\nmode: enforce\r\nmode: none\r\nmx: a.test\r\nmax_age: 1\r\n", "more than once"),
        ("<html>not found</html>", "line 1 is not 'key: value'"),
    ],
)
def test_broken_policies_are_refused_with_the_reason(text, fragment):
    policy, problems = mailauth.parse_sts_policy(text)
    assert policy is None
    assert any(fragment in p for p in problems), problems


def test_mode_none_needs_no_mx():
    assert mailauth.parse_sts_policy("version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n")[1] == []


@given(st.text(max_size=300))
def test_the_parser_never_raises(text):
    policy, problems = mailauth.parse_sts_policy(text)
    assert (policy is None) == bool(problems)


# The matcher (RFC 8461 4.1).


@given(host=hostname)
def test_a_host_matches_itself_in_any_case_and_with_a_trailing_dot(host):
    assert mailauth.mx_matches(host.upper() + ".", host)
    assert mailauth.mx_matches(host, host.upper() + ".")


@given(first=label, domain=hostname)
def test_a_wildcard_stands_for_exactly_one_leftmost_label(first, domain):
    assert mailauth.mx_matches(f"{first}.{domain}", f"*.{domain}")
    assert not mailauth.mx_matches(domain, f"*.{domain}")
    assert not mailauth.mx_matches(f"{first}.{first}.{domain}", f"*.{domain}")


@pytest.mark.parametrize(
    ("host", "pattern"),
    [("mail.acme.test", "mail.globex.test"), ("mail.acme.test", "acme.test"), ("xmail.acme.test", "mail.acme.test"),
     ("mail.acme.test", "*.mail.acme.test"), ("mail.acme.testx", "*.acme.test")],
)  # fmt: skip
def test_other_names_do_not_match(host, pattern):
    assert not mailauth.mx_matches(host, pattern)


def test_the_id_changes_whenever_the_policy_does():
    base = mailauth.mta_sts_policy("testing", ["mail.acme.test"], 86400)
    others = [
        mailauth.mta_sts_policy("enforce", ["mail.acme.test"], 86400),
        mailauth.mta_sts_policy("testing", ["mx2.acme.test"], 86400),
        mailauth.mta_sts_policy("testing", ["mail.acme.test"], 86401),
    ]
    ids = {mailauth.sts_id(text) for text in [base, *others]}
    assert len(ids) == 4
    assert mailauth.sts_txt_id(mailauth.mta_sts_txt(base)) == mailauth.sts_id(base)


# The fetcher and the check, against a real TLS server on 127.0.0.1.


@pytest.fixture
def ca(tmp_path):
    authority = LabCa()
    return authority, str(authority.write(tmp_path / "ca.pem"))


@pytest.fixture
def plan():
    config = validate_config(
        {
            "fleet": {"nodes": 1},
            "dns": {"zones": [{"name": "acme.test"}]},
            "tenants": [{"slug": "acme", "domains": [{"name": "acme.test"}]}],
        }
    )
    return plan_mail_dns(config, {1: NodeAddresses("198.18.0.1")}, {("acme.test", "pm1"): PUBLIC})


def _table(plan) -> StaticLookup:
    table = StaticLookup()
    for record in plan.all_records():
        table.add(record.name, record.type, record.values)
    # The policy host points at the loopback server instead of the (unreachable) mail host.
    table.table.pop((HOST, "CNAME"))
    table.add(HOST, "A", ["127.0.0.1"])
    return table


def test_a_served_policy_passes_and_is_fetched_with_sni_and_host(tmp_path, ca, plan):
    authority, ca_file = ca
    served = Served(plan.mta_sts_policies["acme.test"].encode())
    with policy_server(tmp_path, *authority.issue([HOST]), served) as port:
        result = check_mta_sts(plan.expectations[0], _table(plan), PolicyFetcher(ca_file, port=port))
    assert result.passed, result.reason
    assert "mode testing, mx mail.acme.test" in result.reason and "127.0.0.1" in result.reason
    assert served.requests == [(f"{HOST}:{port}", "/.well-known/mta-sts.txt")]
    assert served.sni == [HOST]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"expired": True}, "the certificate is not valid for mta-sts.acme.test: certificate has expired"),
        ({"names": ["mail.acme.test"]}, "the certificate is not valid for mta-sts.acme.test: Hostname mismatch"),
        ({"other_ca": True}, "unable to get local issuer certificate"),
        ({"status": 404}, "answered HTTP 404"),
        ({"status": 301, "location": "https://elsewhere.test/"}, "senders do not follow redirects"),
        ({"content_type": "text/html"}, "Content-Type is text/html, not text/plain"),
        ({"body": b"x" * 70000}, "larger than 65536 bytes"),
        ({"body": b"version: STSv1\r\nmode: enforce\r\nmx: mail.globex.test\r\nmax_age: 86400\r\n"},
         "MX mail.acme.test matches no mx: line of the served policy (mx: mail.globex.test)"),
        ({"body": b"version: STSv1\r\nmode: testing\r\nmx: mail.acme.test\r\nmax_age: 86400\r\n"},
         "has id="),
    ],
)  # fmt: skip
def test_each_broken_policy_host_fails_with_its_reason(tmp_path, ca, plan, change, fragment):
    authority, ca_file = ca
    names = change.get("names", [HOST])
    issuer = LabCa("another CA") if change.get("other_ca") else authority
    served = Served(
        change.get("body", plan.mta_sts_policies["acme.test"].encode()),
        status=change.get("status", 200),
        content_type=change.get("content_type", "text/plain"),
        location=change.get("location"),
    )
    with policy_server(tmp_path, *issuer.issue(names, expired=change.get("expired", False)), served) as port:
        result = check_mta_sts(plan.expectations[0], _table(plan), PolicyFetcher(ca_file, port=port))
    assert not result.passed
    assert result.reason.startswith("acme.test: ")
    assert fragment in result.reason, result.reason


def test_a_policy_unlike_the_computed_one_fails_even_with_a_matching_id(tmp_path, ca, plan):
    authority, ca_file = ca
    text = plan.mta_sts_policies["acme.test"].replace("max_age: 604800", "max_age: 86400")
    table = _table(plan)
    table.table[("_mta-sts.acme.test", "TXT")] = (mailauth.mta_sts_txt(text),)
    with policy_server(tmp_path, *authority.issue([HOST]), Served(text.encode())) as port:
        result = check_mta_sts(plan.expectations[0], table, PolicyFetcher(ca_file, port=port))
    assert not result.passed and "not the one the stack computes" in result.reason


def test_nothing_listening_and_no_address_fail_within_the_timeout(ca, plan):
    _, ca_file = ca
    table = _table(plan)
    result = check_mta_sts(plan.expectations[0], table, PolicyFetcher(ca_file, port=1, timeout=2))
    assert not result.passed and "ConnectionRefusedError" in result.reason
    table.table.pop((HOST, "A"))
    result = check_mta_sts(plan.expectations[0], table, PolicyFetcher(ca_file, port=1, timeout=2))
    assert result.reason == "acme.test: the policy host mta-sts.acme.test does not resolve"


def test_a_failing_fetch_under_enforce_says_senders_will_not_deliver(ca, plan):
    _, ca_file = ca
    exp = plan.expectations[0]
    enforce = type(exp)(
        **{**exp.__dict__, "mta_sts_policy": exp.mta_sts_policy.replace("testing", "enforce")}
    )
    result = check_mta_sts(enforce, _table(plan), PolicyFetcher(ca_file, port=1, timeout=2))
    assert not result.passed and "mode is enforce" in result.reason


def test_an_unreadable_ca_bundle_is_named(tmp_path):
    with pytest.raises(PolicyFetchError, match="cannot read the CA bundle"):
        PolicyFetcher(str(tmp_path / "missing.pem")).context()
