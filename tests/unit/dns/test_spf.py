"""SPF: syntax, lookup counting through nested includes (as checkdmarc counts), evaluation for an IP."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modules.dns.lookup import StaticLookup
from modules.dns.spf import LOOKUP_LIMIT, build_spf, count_lookups, evaluate, parse_spf


def test_build_spf_lists_ips_then_includes_then_all():
    assert build_spf(["192.0.2.1"], ["2001:db8::1"], ["_spf.esp.test"], "-") == (
        "v=spf1 ip4:192.0.2.1 ip6:2001:db8::1 include:_spf.esp.test -all"
    )


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        ("v=spf2 -all", "does not start with 'v=spf1'"),
        ("v=spf1 ip4:300.1.1.1 -all", "is not an IP4 address"),
        ("v=spf1 ip4:2001:db8::1 -all", "is an IPv6 address, not IPv4"),
        ("v=spf1 include -all", "include needs a domain"),
        ("v=spf1 include:localhost -all", "not a fully qualified domain name"),
        ("v=spf1 foo:bar -all", "unknown mechanism 'foo'"),
        ("v=spf1 ptr -all", "ptr is deprecated"),
        ("v=spf1 -all ip4:192.0.2.1", "comes after 'all'"),
        ("v=spf1 a/33 -all", "not an IPv4 prefix length"),
        ("v=spf1 redirect=a.test redirect=b.test", "appears more than once"),
        ("v=spf1 -all redirect=a.test", "comes after 'all'"),
    ],
)
def test_syntax_errors_are_reported(record, fragment):
    errors = parse_spf(record).errors
    assert any(fragment in error for error in errors), errors


def test_valid_record_has_no_errors():
    record = parse_spf(
        "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a mx:mx.test/24//64 include:_spf.x.test ~all"
    )
    assert record.errors == []
    assert [t.name for t in record.mechanisms] == ["ip4", "ip6", "a", "mx", "include", "all"]


def _lookup(records: dict[str, str], addresses=(), mx: dict[str, list[str]] | None = None) -> StaticLookup:
    table = StaticLookup()
    for name, text in records.items():
        table.add(name, "TXT", [text])
    for name in addresses:
        table.add(name, "A", ["192.0.2.10"])
    for name, hosts in (mx or {}).items():
        table.add(name, "MX", [f"{10 * i} {host}." for i, host in enumerate(hosts, 1)])
    return table


def test_nested_includes_count_every_lookup_and_qualifiers_do_not_matter():
    lookup = _lookup(
        {
            "a.test": "v=spf1 include:b.test ~include:c.test -all",
            "b.test": "v=spf1 a:h1.test a:h2.test ?all",
            "c.test": "v=spf1 include:d.test mx:m.test -all",
            "d.test": "v=spf1 exists:%{i}.x.test -all",
        },
        addresses=["h1.test", "h2.test", "mx1.test"],
        mx={"m.test": ["mx1.test"]},
    )
    count = count_lookups("a.test", "v=spf1 include:b.test ~include:c.test -all", lookup)
    # include b (1) + a,a (2) + include c (1) + include d (1) + exists (1) + mx (1) + its target (1)
    assert count.lookups == 8
    assert count.void_lookups == 0
    assert count.errors == [] and count.verdicts() == []


def test_more_than_ten_lookups_is_an_error_that_shows_where_they_come_from():
    records = {f"i{n}.test": f"v=spf1 a:h{n}.test a:g{n}.test -all" for n in range(4)}
    top = "v=spf1 " + " ".join(f"include:i{n}.test" for n in range(4)) + " -all"
    count = count_lookups(
        "top.test", top, _lookup(records, [f"h{n}.test" for n in range(4)] + [f"g{n}.test" for n in range(4)])
    )
    assert count.lookups == 12
    (verdict,) = count.verdicts()
    assert "needs 12 DNS lookups, more than the limit of 10" in verdict
    assert "include:i0.test 3" in verdict


def test_void_lookups_are_counted_and_limited_to_two():
    lookup = _lookup({}, addresses=[])
    count = count_lookups("x.test", "v=spf1 a:none1.test a:none2.test a:none3.test -all", lookup)
    assert count.void_lookups == 3
    assert any("3 void lookups" in verdict for verdict in count.verdicts())


def test_missing_include_target_is_a_permanent_error_and_a_void_lookup():
    count = count_lookups("x.test", "v=spf1 include:nowhere.test -all", _lookup({}))
    assert count.lookups == 1 and count.void_lookups == 1
    assert any("nowhere.test does not exist" in error for error in count.errors)


def test_include_loop_is_detected():
    lookup = _lookup({"a.test": "v=spf1 include:b.test -all", "b.test": "v=spf1 include:a.test -all"})
    count = count_lookups("a.test", "v=spf1 include:b.test -all", lookup)
    assert any("loops back: a.test → b.test → a.test" in error for error in count.errors)


def test_mx_targets_each_cost_a_lookup_as_checkdmarc_counts():
    lookup = _lookup({}, addresses=["m1.test", "m2.test"], mx={"d.test": ["m1.test", "m2.test", "m3.test"]})
    count = count_lookups("d.test", "v=spf1 mx -all", lookup)
    assert count.lookups == 4  # mx + 3 targets
    assert count.void_lookups == 1  # m3.test has no address


# ---- property tests: the counter against an independent count over generated include trees ----------

QUALIFIER = st.sampled_from(["", "+", "-", "~", "?"])


@st.composite
def spf_trees(draw, max_depth=3):
    """A tree of SPF records; returns (records, addresses, mx, expected lookups, expected void lookups)."""
    records: dict[str, str] = {}
    addresses: list[str] = []
    mx: dict[str, list[str]] = {}
    counter = [0]

    def node(depth: int) -> tuple[str, int, int]:
        counter[0] += 1
        name = f"n{counter[0]}.spf.test"
        terms, lookups, void = [], 0, 0
        for _ in range(draw(st.integers(0, 2))):
            terms.append(f"{draw(QUALIFIER)}ip4:192.0.2.{draw(st.integers(1, 254))}")
        for k in range(draw(st.integers(0, 2))):
            host = f"h{k}.{name}"
            if draw(st.booleans()):
                addresses.append(host)
            else:
                void += 1
            terms.append(f"{draw(QUALIFIER)}a:{host}")
            lookups += 1
        if draw(st.booleans()):
            targets = [f"mx{k}.{name}" for k in range(draw(st.integers(1, 3)))]
            mx[name] = targets
            addresses.extend(targets)
            terms.append(f"{draw(QUALIFIER)}mx")
            lookups += 1 + len(targets)
        if depth < max_depth:
            for _ in range(draw(st.integers(0, 3 - depth))):
                child, child_lookups, child_void = node(depth + 1)
                terms.append(f"{draw(QUALIFIER)}include:{child}")
                lookups += 1 + child_lookups
                void += child_void
        terms.append(f"{draw(QUALIFIER)}all")
        records[name] = "v=spf1 " + " ".join(terms)
        return name, lookups, void

    root, lookups, void = node(0)
    return root, records, addresses, mx, lookups, void


@settings(max_examples=150, deadline=None)
@given(spf_trees())
def test_counter_matches_an_independent_count_of_the_tree(tree):
    root, records, addresses, mx, expected, expected_void = tree
    count = count_lookups(root, records[root], _lookup(records, addresses, mx))
    assert count.lookups == expected
    assert count.void_lookups == expected_void
    assert count.errors == []
    assert bool(count.verdicts()) == (expected > LOOKUP_LIMIT or expected_void > 2)


@settings(max_examples=100, deadline=None)
@given(
    spf_trees(),
    st.lists(st.sampled_from(["ip4:198.51.100.1", "ip6:2001:db8::7", "exp=explain.test"]), max_size=3),
)
def test_terms_that_need_no_lookup_do_not_change_the_count(tree, extra):
    root, records, addresses, mx, expected, _ = tree
    lookup = _lookup(records, addresses, mx)
    text = records[root].rsplit(" ", 1)
    padded = " ".join([text[0], *extra, text[1]])
    assert count_lookups(root, padded, lookup).lookups == expected


@settings(max_examples=100, deadline=None)
@given(spf_trees(max_depth=2), st.data())
def test_any_include_cycle_is_reported_and_counting_stops(tree, data):
    root, records, addresses, mx, _, _ = tree
    names = sorted(records)
    victim = data.draw(st.sampled_from(names))
    records = dict(records)
    head, tail = records[victim].rsplit(" ", 1)
    records[victim] = f"{head} include:{root} {tail}"
    count = count_lookups(root, records[root], _lookup(records, addresses, mx))
    assert any("loops back" in error for error in count.errors)


def test_evaluate_finds_the_sending_ip_through_includes():
    lookup = _lookup(
        {"d.test": "v=spf1 include:esp.test ~all", "esp.test": "v=spf1 ip4:198.51.100.0/24 -all"}
    )
    assert evaluate("d.test", "198.51.100.9", lookup).result == "pass"
    assert evaluate("d.test", "192.0.2.9", lookup).result == "softfail"
    assert evaluate("nothing.test", "192.0.2.9", lookup).result == "none"
    lookup.add("two.test", "TXT", ["v=spf1 -all", "v=spf1 +all"])
    assert evaluate("two.test", "192.0.2.9", lookup).result == "permerror"
