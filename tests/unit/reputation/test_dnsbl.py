from __future__ import annotations

import dns.reversename
import pytest

from modules.reputation.dnsbl import Outcome, Result, Zone, classify, reverse_ip, verdicts


def test_ipv4_is_reversed_by_octet():
    assert reverse_ip("203.0.113.10") == "10.113.0.203"


def test_ipv6_is_reversed_by_nibble():
    name = reverse_ip("2001:db8::1")
    assert name == "1." + "0." * 23 + "8.b.d.0.1.0.0.2"
    # The same nibbles as the reverse zone's names (RFC 5782 uses ip6.arpa's order).
    assert f"{name}.ip6.arpa." == dns.reversename.from_address("2001:db8::1").to_text()


def test_query_name_puts_the_key_between_ip_and_zone_and_hides_it():
    zone = Zone("zen.dq.spamhaus.net", query_key="k3y")
    assert zone.query_name("192.0.2.1") == "1.2.0.192.k3y.zen.dq.spamhaus.net."
    assert "k3y" not in repr(zone)
    assert Zone("dnsbl.penguinmails.test").query_name("192.0.2.1") == "1.2.0.192.dnsbl.penguinmails.test."


def test_a_bad_address_is_refused():
    with pytest.raises(ValueError):
        reverse_ip("192.0.2.300")


@pytest.mark.parametrize(
    ("answer", "outcome", "why"),
    [
        (["127.0.0.2"], Outcome.LISTED, None),
        (["127.0.0.4", "127.0.0.10"], Outcome.LISTED, None),
        ([], Outcome.CLEAN, None),
        (["127.255.255.254"], Outcome.ERROR, "public or open resolver"),
        (["127.255.255.252"], Outcome.ERROR, "typo"),
        (["127.255.255.255"], Outcome.ERROR, "excessive"),
        (["127.0.0.2", "127.255.255.254"], Outcome.ERROR, "refused"),
        (["198.51.100.7"], Outcome.ERROR, "outside 127.0.0.0/8"),
    ],
)
def test_answers_are_classified_and_block_codes_are_never_listings(answer, outcome, why):
    found, reason = classify(answer)
    assert found is outcome
    if why:
        assert why in reason
    else:
        assert reason is None


def _r(ip, zone, outcome):
    return Result(ip, zone, outcome)


def test_verdict_listed_anywhere_wins_and_clean_needs_every_zone():
    rows = [
        _r("192.0.2.1", "a", Outcome.CLEAN),
        _r("192.0.2.1", "b", Outcome.LISTED),
        _r("192.0.2.2", "a", Outcome.CLEAN),
        _r("192.0.2.2", "b", Outcome.ERROR),
        _r("192.0.2.3", "a", Outcome.CLEAN),
        _r("192.0.2.3", "b", Outcome.CLEAN),
        _r("192.0.2.4", "a", Outcome.ERROR),
        _r("192.0.2.4", "b", Outcome.LISTED),
    ]
    found = {v.ip: v for v in verdicts(rows)}
    assert found["192.0.2.1"].outcome is Outcome.LISTED and found["192.0.2.1"].listed_zones == ["b"]
    assert found["192.0.2.2"].outcome is Outcome.ERROR
    assert found["192.0.2.3"].outcome is Outcome.CLEAN
    assert found["192.0.2.4"].outcome is Outcome.LISTED
    assert found["192.0.2.1"].blacklist_status() == {
        "a": {"state": "clean", "codes": [], "reason": None},
        "b": {"state": "listed", "codes": [], "reason": None},
    }
