"""Route 53 value formats and change batches (no network)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from modules.dns.rfc2136 import Change, Prerequisite
from modules.dns.route53 import Route53Client, from_route53, to_route53


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=1200))
def test_txt_values_round_trip_through_route53_quoting(text):
    quoted = to_route53("TXT", text)
    assert all(len(part) <= 257 for part in quoted.split('" "'))
    assert from_route53("TXT", quoted) == text


def test_names_in_values_are_made_absolute():
    assert from_route53("MX", "10 Mail.Acme.Test") == "10 mail.acme.test."
    assert from_route53("CNAME", "mail.acme.test.") == "mail.acme.test."


def test_a_touched_rrset_becomes_an_exact_delete_and_a_create_keeping_foreign_values(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unit")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit")
    client = Route53Client("Z1", endpoint_url="http://127.0.0.1:9")
    changes = [
        Change("delete", "acme.test", "TXT", "v=spf1 -all"),
        Change("add", "acme.test", "TXT", "v=spf1 ip4:192.0.2.1 ~all", 300),
        Change("add", "mail.acme.test", "A", "192.0.2.1", 300),
    ]
    prerequisites = [
        Prerequisite("acme.test", "TXT", ("site=1", "v=spf1 -all"), 600),
        Prerequisite("mail.acme.test", "A", (), 0),
    ]
    (batch,) = client.build_batches(changes, prerequisites)
    assert [(c["Action"], c["ResourceRecordSet"]["Name"], c["ResourceRecordSet"]["TTL"]) for c in batch] == [
        ("DELETE", "acme.test.", 600),
        ("CREATE", "acme.test.", 300),
        ("CREATE", "mail.acme.test.", 300),
    ]
    assert [r["Value"] for r in batch[1]["ResourceRecordSet"]["ResourceRecords"]] == [
        '"site=1"',
        '"v=spf1 ip4:192.0.2.1 ~all"',
    ]
