"""Labels we can prove, one order per node per run, and refusing what is not provably ours."""

from __future__ import annotations

import pytest
from pulumi.runtime.rpc import UNKNOWN

from modules.hostwinds.client import HostwindsError
from modules.hostwinds.common import HostwindsOwnershipError, verify_owned
from modules.hostwinds.identity import FleetIdentityProvider, is_tag, new_tag
from modules.hostwinds.vps import OrderLedger, VpsProvider, choose_label

NEWS = {
    "name_base": "dev-penguinmails-fleet-mx-01",
    "owner_tag": "k3x9q2m7ab",
    "location_id": 1,
    "image": "debian-12",
}


def test_a_new_node_is_labelled_with_the_fleet_tag_and_keeps_its_label():
    assert choose_label({}, NEWS) == "dev-penguinmails-fleet-mx-01-k3x9q2m7ab"
    recorded = {**NEWS, "label": "dev-penguinmails-fleet-mx-01-k3x9q2m7ab"}
    assert choose_label(recorded, {**NEWS, "owner_tag": "othertag00"}) == recorded["label"]


def test_a_node_recorded_before_tags_keeps_its_old_label_until_it_is_replaced():
    legacy = {"label": "dev-penguinmails-fleet-mx-01", "location_id": 1, "image": "debian-12"}
    assert choose_label(legacy, NEWS) == "dev-penguinmails-fleet-mx-01"
    moved = {**NEWS, "location_id": 2}
    assert choose_label(legacy, moved) == "dev-penguinmails-fleet-mx-01-k3x9q2m7ab"


def test_a_lone_vps_gets_a_random_tag_and_an_unknown_tag_leaves_the_label_unknown():
    first = choose_label({}, {**NEWS, "owner_tag": None})
    second = choose_label({}, {**NEWS, "owner_tag": None})
    assert first.startswith("dev-penguinmails-fleet-mx-01-") and first != second
    assert is_tag(first.rsplit("-", 1)[1])
    assert choose_label({}, {**NEWS, "owner_tag": UNKNOWN}) == UNKNOWN


def test_fleet_identity_chooses_its_tag_once():
    provider = FleetIdentityProvider()
    fresh = provider.check({}, {"tag": None}).inputs["tag"]
    assert is_tag(fresh) and fresh != provider.check({}, {"tag": None}).inputs["tag"]
    assert provider.check({"tag": fresh}, {"tag": None}).inputs["tag"] == fresh
    assert provider.diff(fresh, {"tag": fresh}, {"tag": fresh}).changes is False
    assert [f.property for f in provider.check({}, {"tag": "UPPER"}).failures] == ["tag"]
    assert len({new_tag() for _ in range(200)}) == 200


def test_the_ledger_refuses_a_second_order_for_a_label_and_more_orders_than_nodes():
    ledger = OrderLedger()
    ledger.claim("http://hw", "tag", "a", 2, "Vps[a]")
    with pytest.raises(HostwindsError, match="already sent"):
        ledger.claim("http://hw", "tag", "a", 2, "Vps[a]")
    ledger.claim("http://hw", "tag", "b", 2, "Vps[b]")
    with pytest.raises(HostwindsError, match="fleet's whole size"):
        ledger.claim("http://hw", "tag", "c", 2, "Vps[c]")
    ledger.claim("http://hw", "other-tag", "c", 2, "Vps[c]")  # another fleet has its own budget
    assert ledger.count("http://hw", "tag") == 2


def test_ownership_needs_the_recorded_label_and_uuid():
    inst = {"serviceid": 7, "srvrname": "dev-x-k3x9q2m7ab", "server_uuid": "u-1"}
    verify_owned(inst, "dev-x-k3x9q2m7ab", "u-1", "Vps[x]")
    verify_owned(inst, "dev-x-k3x9q2m7ab", None, "Vps[x]")  # recorded before uuids were kept: learnt
    with pytest.raises(HostwindsOwnershipError, match=r"labelled 'someone-else'.*not 'dev-x-k3x9q2m7ab'"):
        verify_owned({**inst, "srvrname": "someone-else"}, "dev-x-k3x9q2m7ab", "u-1", "Vps[x]")
    with pytest.raises(HostwindsOwnershipError, match="server_uuid u-2, not u-1"):
        verify_owned({**inst, "server_uuid": "u-2"}, "dev-x-k3x9q2m7ab", "u-1", "Vps[x]")


def test_check_computes_the_label_and_refuses_a_malformed_tag(monkeypatch):
    from modules.hostwinds import common

    monkeypatch.setattr(common, "catalogue_failures", lambda client, props: [])
    monkeypatch.setenv("PENGUINMAILS_HOSTWINDS_API_KEY", "unit-test-key")
    props = {**NEWS, "plan_id": 1, "billing_cycle": "hourly", "ssh_keys": [], "label": None}
    checked = VpsProvider().check({}, props)
    assert checked.inputs["label"] == "dev-penguinmails-fleet-mx-01-k3x9q2m7ab" and checked.failures == []
    bad = VpsProvider().check({}, {**props, "owner_tag": "x y", "order_budget": 0})
    assert {f.property for f in bad.failures} >= {"owner_tag", "order_budget"}


def test_orphans_include_a_second_server_under_a_recorded_label_and_see_operations_in_flight():
    from modules.hostwinds.orphans import find_orphans, fleet_of

    tag = "k3x9q2m7ab"
    deployment = {
        "resources": [
            {"type": "pulumi-python:dynamic/hostwinds:FleetIdentity", "outputs": {"tag": tag}},
            {
                "type": "pulumi-python:dynamic/hostwinds:Vps",
                "id": "100",
                "outputs": {"service_id": 100, "label": f"a-{tag}"},
            },
            {
                "type": "pulumi-python:dynamic/hostwinds:Vps",
                "id": f"b-{tag}",
                "outputs": {"service_id": None, "label": f"b-{tag}"},
            },
        ],
        "pending_operations": [{"type": "creating"}],
    }
    fleet = fleet_of(deployment, "dev")
    assert fleet.in_flight == 1
    listing = [
        {"serviceid": 100, "srvrname": f"a-{tag}", "status": "ACTIVE"},
        {"serviceid": 101, "srvrname": f"a-{tag}", "status": "ACTIVE"},  # a duplicate of a recorded node
        {"serviceid": 102, "srvrname": f"b-{tag}", "status": "BUILD"},  # the pending order: tracked
        {"serviceid": 103, "srvrname": "a-zzzzzzzzzz", "status": "ACTIVE"},  # not ours
    ]
    assert [row["service_id"] for row in find_orphans(fleet, listing)] == [101]
