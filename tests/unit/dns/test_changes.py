"""Change planning: ownership by slot, conflicts, takeover, TTL changes, compare-and-swap, safety share."""

from __future__ import annotations

from modules.dns.changes import live_records, plan_changes
from modules.dns.records import Record
from modules.dns.rfc2136 import Change, LiveRRset, LiveZone, Prerequisite

ZONE = "acme.test"


def live() -> LiveZone:
    """A fresh zone as the dev BIND serves it: SOA, NS and the name server's address."""
    zone = LiveZone(ZONE)
    zone.rrsets[(ZONE, "SOA")] = LiveRRset(
        3600, ("ns.acme.test. hostmaster.acme.test. 1 3600 600 604800 300",)
    )
    zone.rrsets[(ZONE, "NS")] = LiveRRset(3600, ("ns.acme.test.",))
    zone.rrsets[("ns.acme.test", "A")] = LiveRRset(3600, ("127.0.0.1",))
    return zone


def zone_with(entries: dict[tuple[str, str], tuple[int, tuple[str, ...]]]) -> LiveZone:
    zone = live()
    for key, (ttl, values) in entries.items():
        zone.rrsets[key] = LiveRRset(ttl, tuple(sorted(values)))
    return zone


SPF = Record.make(ZONE, "TXT", 300, ["v=spf1 ip4:192.0.2.1 ~all"])
MAIL = Record.make("mail.acme.test", "A", 300, ["192.0.2.1"])


def test_creating_in_an_empty_zone_adds_with_absent_prerequisites():
    plan = plan_changes(ZONE, [SPF, MAIL], set(), live())
    assert plan.changes == [
        Change("add", ZONE, "TXT", "v=spf1 ip4:192.0.2.1 ~all", 300),
        Change("add", "mail.acme.test", "A", "192.0.2.1", 300),
    ]
    assert Prerequisite(ZONE, "TXT", ()) in plan.prerequisites
    assert plan.owned == ["acme.test|TXT|v=spf1", "mail.acme.test|A|"]
    assert plan.existing_changed == 0 and plan.added == 2


def test_nothing_to_do_when_the_zone_already_matches():
    zone = zone_with({(ZONE, "TXT"): (300, SPF.values), ("mail.acme.test", "A"): (300, MAIL.values)})
    plan = plan_changes(ZONE, [SPF, MAIL], {"acme.test|TXT|v=spf1", "mail.acme.test|A|"}, zone)
    assert plan.empty and plan.prerequisites == []


def test_foreign_txt_beside_our_spf_is_never_touched():
    zone = zone_with({(ZONE, "TXT"): (300, ("site-verification=1", "v=spf1 ip4:192.0.2.9 ~all"))})
    plan = plan_changes(ZONE, [SPF], {"acme.test|TXT|v=spf1"}, zone)
    assert plan.changes == [
        Change("delete", ZONE, "TXT", "v=spf1 ip4:192.0.2.9 ~all"),
        Change("add", ZONE, "TXT", "v=spf1 ip4:192.0.2.1 ~all", 300),
    ]
    # The compare-and-swap carries the whole live RRset, foreign value included.
    assert plan.prerequisites == [
        Prerequisite(ZONE, "TXT", ("site-verification=1", "v=spf1 ip4:192.0.2.9 ~all"), 300)
    ]


def test_a_foreign_record_in_a_slot_we_want_is_a_conflict_unless_taken_over():
    zone = zone_with({(ZONE, "TXT"): (300, ("v=spf1 include:other.test -all",))})
    plan = plan_changes(ZONE, [SPF], set(), zone)
    assert plan.changes == [] and len(plan.conflicts) == 1
    assert (
        "already holds 'v=spf1 include:other.test -all', which this stack did not create" in plan.conflicts[0]
    )
    adopted = plan_changes(ZONE, [SPF], set(), zone, adopt_existing=True)
    assert adopted.conflicts == [] and adopted.existing_changed == 1


def test_identical_records_left_by_a_lost_answer_are_claimed_quietly():
    zone = zone_with({(ZONE, "TXT"): (300, SPF.values)})
    plan = plan_changes(ZONE, [SPF], set(), zone)
    assert plan.conflicts == [] and plan.empty and plan.owned == ["acme.test|TXT|v=spf1"]


def test_cname_conflicts_with_foreign_data_at_its_name():
    zone = zone_with({("www.acme.test", "A"): (300, ("192.0.2.5",))})
    plan = plan_changes(ZONE, [Record.make("www.acme.test", "CNAME", 300, ["mail.acme.test"])], set(), zone)
    assert plan.conflicts == ["www.acme.test CNAME: the name already has A records we do not own"]


def test_switching_our_own_a_record_to_a_cname_is_allowed():
    zone = zone_with({("www.acme.test", "A"): (300, ("192.0.2.5",))})
    cname = Record.make("www.acme.test", "CNAME", 300, ["mail.acme.test"])
    plan = plan_changes(ZONE, [cname], {"www.acme.test|A|"}, zone)
    assert plan.conflicts == []
    assert Change("delete", "www.acme.test", "A", "192.0.2.5") in plan.changes


def test_records_we_no_longer_want_are_deleted_and_counted():
    zone = zone_with({(ZONE, "TXT"): (300, SPF.values), ("mail.acme.test", "A"): (300, MAIL.values)})
    plan = plan_changes(ZONE, [SPF], {"acme.test|TXT|v=spf1", "mail.acme.test|A|"}, zone)
    assert plan.changes == [Change("delete", "mail.acme.test", "A", "192.0.2.1")]
    assert plan.existing_changed == 1
    assert plan.owned == ["acme.test|TXT|v=spf1"]


def test_a_ttl_change_re_adds_the_values_so_the_server_takes_it():
    zone = zone_with({("mail.acme.test", "A"): (60, MAIL.values)})
    plan = plan_changes(ZONE, [MAIL], {"mail.acme.test|A|"}, zone)
    assert plan.changes == [
        Change("delete", "mail.acme.test", "A", "192.0.2.1"),
        Change("add", "mail.acme.test", "A", "192.0.2.1", 300),
    ]


def test_safety_share_counts_replaced_and_deleted_records_against_the_whole_zone():
    entries = {(f"h{i}.acme.test", "A"): (300, (f"192.0.2.{i}",)) for i in range(10)}
    zone = zone_with(entries)
    owned = {f"h{i}.acme.test|A|" for i in range(10)}
    keep = [Record.make(f"h{i}.acme.test", "A", 300, [f"192.0.2.{i}"]) for i in range(4)]
    plan = plan_changes(ZONE, keep, owned, zone)
    assert plan.existing_changed == 6
    assert zone.record_count() == 12  # ten A records, NS and the name server's address: SOA excluded
    assert plan.share(zone) == 0.5


def test_refresh_view_holds_only_our_slots():
    zone = zone_with(
        {
            (ZONE, "TXT"): (300, ("site-verification=1", "v=spf1 -all")),
            ("x.acme.test", "A"): (300, ("192.0.2.7",)),
        }
    )
    records = live_records(zone, ["acme.test|TXT|v=spf1"], [{"name": ZONE, "type": "TXT", "not_after": None}])
    assert records == [{"name": ZONE, "type": "TXT", "ttl": 300, "values": ["v=spf1 -all"]}]
