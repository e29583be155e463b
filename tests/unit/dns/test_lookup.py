"""The injectable lookups: the static table, the plan overlay, server addresses."""

from __future__ import annotations

import pytest

from modules.dns.lookup import OverlayLookup, StaticLookup, parse_server


def test_static_lookup_distinguishes_nxdomain_nodata_and_follows_cnames():
    table = StaticLookup({("a.test", "A"): ["192.0.2.1"], ("alias.test", "CNAME"): ["a.test."]})
    assert table("a.test", "A").values == ("192.0.2.1",)
    assert table("a.test", "TXT").status == "nodata"
    assert table("none.test", "A").status == "nxdomain"
    aliased = table("alias.test", "A")
    assert aliased.ok and aliased.cname_chain == ("alias.test",)


def test_overlay_prefers_the_plan_and_falls_back_for_the_rest():
    planned = StaticLookup({("mail.acme.test", "A"): ["192.0.2.1"]})
    outside = StaticLookup({("_spf.esp.test", "TXT"): ["v=spf1 -all"]})
    lookup = OverlayLookup(planned, outside)
    assert lookup("mail.acme.test", "A").ok
    assert lookup("_spf.esp.test", "TXT").values == ("v=spf1 -all",)
    assert lookup("nothing.test", "A").status == "nxdomain"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 53)),
    ],
)
def test_server_addresses_parse(text, expected):
    assert parse_server(text) == expected


def test_server_names_are_refused():
    with pytest.raises(ValueError):
        parse_server("ns.example.test:53")
