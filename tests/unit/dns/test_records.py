"""The record model: canonical forms, TXT splitting, ownership slots."""

from __future__ import annotations

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modules.dns.records import (
    Record,
    RecordError,
    from_rdata,
    join_txt,
    merge,
    owner_domain,
    reverse_name,
    slot_of,
    split_txt,
    to_rdata,
)


@given(st.text(max_size=3000))
def test_split_txt_pieces_fit_in_255_bytes_and_join_back(text):
    pieces = split_txt(text)
    assert pieces, "a TXT record needs at least one string"
    assert all(len(piece) <= 255 for piece in pieces)
    assert b"".join(pieces) == text.encode("utf-8")
    assert len(pieces) == max(1, -(-len(text.encode("utf-8")) // 255))
    assert all(pieces[:-1]) and all(len(piece) == 255 for piece in pieces[:-1])


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=2000))
def test_txt_survives_the_wire_round_trip(text):
    rdata = to_rdata("TXT", text)
    wire = rdata.to_wire()
    back = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.TXT, wire, 0, len(wire))
    assert from_rdata(back) == text
    assert join_txt(back.strings) == text


def test_dkim_key_is_split_into_several_strings():
    value = "v=DKIM1; k=rsa; p=" + "A" * 392
    rdata = to_rdata("TXT", value)
    assert [len(s) for s in rdata.strings] == [255, len(value) - 255]


@pytest.mark.parametrize(
    ("rtype", "given", "canonical"),
    [
        ("A", " 192.0.2.1 ", "192.0.2.1"),
        ("AAAA", "2001:DB8:0:0::1", "2001:db8::1"),
        ("MX", "10 Mail.Example.TEST", "10 mail.example.test."),
        ("MX", "0 .", "0 ."),
        ("CNAME", "Mail.Example.test.", "mail.example.test."),
        ("PTR", "mx-01.fleet.penguinmails.test", "mx-01.fleet.penguinmails.test."),
    ],
)
def test_values_are_put_in_canonical_form(rtype, given, canonical):
    record = Record.make("x.example.test", rtype, 300, [given])
    assert record.values == (canonical,)
    # The wire form reads back as the same canonical value (so a refresh compares equal).
    assert from_rdata(to_rdata(rtype, canonical)) == canonical


@pytest.mark.parametrize(
    ("name", "rtype", "ttl", "values", "fragment"),
    [
        ("mail.example.test", "A", 300, ["010.1.2.3"], "mail.example.test A: '010.1.2.3' is not an IPv4"),
        ("mail.example.test", "AAAA", 300, ["192.0.2.1"], "is not an IPv6 address"),
        ("example.test", "MX", 300, ["mail.example.test"], "is not 'preference target'"),
        ("bad..name.test", "A", 300, ["192.0.2.1"], "label '' is not"),
        ("example.test", "SRV", 300, ["0 0 25 mail"], "type is not supported"),
        ("example.test", "TXT", 5, ["x"], "ttl 5 is outside"),
        ("example.test", "TXT", 300, [], "no values"),
    ],
)
def test_bad_records_name_the_record_and_the_reason(name, rtype, ttl, values, fragment):
    with pytest.raises(RecordError) as error:
        Record.make(name, rtype, ttl, values)
    assert fragment in str(error.value)


def test_txt_slots_separate_tagged_records_from_free_text():
    assert slot_of("TXT", "v=spf1 -all") == "v=spf1"
    assert slot_of("TXT", "v=DMARC1; p=none") == "v=dmarc1"
    assert slot_of("TXT", "google-site-verification=abc") == "=google-site-verification=abc"
    assert slot_of("A", "192.0.2.1") == ""
    record = Record.make("example.test", "TXT", 300, ["v=spf1 -all", "hello"])
    assert set(record.slots()) == {"example.test|TXT|v=spf1", "example.test|TXT|=hello"}


def test_merge_joins_values_and_refuses_two_ttls_for_one_rrset():
    a = Record.make("example.test", "TXT", 300, ["one"])
    b = Record.make("example.test", "TXT", 300, ["two"])
    assert merge([a, b]) == [Record.make("example.test", "TXT", 300, ["one", "two"])]
    with pytest.raises(RecordError, match="TTLs 300 and 600"):
        merge([a, Record.make("example.test", "TXT", 600, ["two"])])


def test_owner_domain_and_reverse_names():
    assert owner_domain("_dmarc.acme.test") == "acme.test"
    assert owner_domain("pm1._domainkey.acme.test") == "acme.test"
    assert owner_domain("acme.test._report._dmarc.penguinmails.test") == "acme.test"
    assert reverse_name("198.18.0.7") == "7.0.18.198.in-addr.arpa"
    assert reverse_name("2001:db8::1").endswith(".8.b.d.0.1.0.0.2.ip6.arpa")
