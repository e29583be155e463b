"""The Hostwinds providers called directly (as the engine calls them) against a private memory simulator."""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections import Counter

import pytest

from modules.hostwinds.client import HostwindsError
from modules.hostwinds.resources import (
    FleetReadyProvider,
    SshKeyProvider,
    VpsProvider,
    forget_listing,
)
from modules.providers import ProviderSettings
from tests.support.hostwinds import private_simulator

OPERATOR = "penguinmails-dev-operator"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with private_simulator(
        tmp_path_factory.mktemp("hostwinds-sim"), build_seconds=0.3, delete_seconds=0.1
    ) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _clean(sim, monkeypatch):
    monkeypatch.setenv("PENGUINMAILS_HOSTWINDS_ENDPOINT", sim.endpoint)
    monkeypatch.setenv("PENGUINMAILS_HOSTWINDS_API_KEY", sim.api_key)
    sim.faults(reset=True)
    sim.configure(build_seconds=0.3)
    sim.clear_log()
    forget_listing(sim.client())
    yield
    sim.faults(reset=True)


def configured(provider, **hostwinds):
    section = {
        "poll_interval_seconds": 0.1,
        "lost_answer_wait_seconds": 1,
        "build_timeout_seconds": 30,
        **hostwinds,
    }
    provider.settings = ProviderSettings({"penguinmails:hostwinds": json.dumps(section)})
    return provider


def vps_props(label: str, **overrides) -> dict:
    props = {
        "label": label,
        "location_id": 1,
        "image": "debian-12",
        "plan_id": 1,
        "ssh_keys": [OPERATOR],
        "firewall_profile": "smtp",
        "rdns": f"{label}.fleet.penguinmails.test",
        "billing_cycle": "hourly",
        "wait_until_ready": True,
        **overrides,
    }
    return props


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def labelled(sim, label: str) -> list[dict]:
    return [row for row in sim.instances() if row["srvrname"] == label]


def test_vps_create_read_update_delete_round_trip(sim):
    provider = configured(VpsProvider())
    label = unique()
    props = vps_props(label)
    assert provider.check({}, props).failures == []

    created = provider.create(props)
    outs = created.outs
    (row,) = [r for r in sim.instances(secrets=True) if r["srvrname"] == label]
    assert created.id == str(row["serviceid"]) and outs["service_id"] == row["serviceid"]
    assert outs["status"] == "ACTIVE" and outs["main_ip"] == row["main_ip"] and outs["ipv6"]
    assert row["rdns"][row["main_ip"]] == props["rdns"] and row["firewall"] == "smtp"
    assert row["keys"] == [OPERATOR]
    assert "password" not in json.dumps(outs) and row["password"] not in json.dumps(outs)
    assert row["configkey"] not in json.dumps(outs)
    assert provider.read(created.id, outs).outs == outs  # nothing drifted

    news = {
        **props,
        "label": label + "-b",
        "rdns": "other.fleet.penguinmails.test",
        "firewall_profile": "web",
        "billing_cycle": "monthly",
        "plan_id": 2,
    }
    diff = provider.diff(created.id, outs, news)
    assert diff.changes and diff.replaces == []
    updated = provider.update(created.id, outs, news).outs
    (row,) = labelled(sim, label + "-b")
    assert row["serviceid"] == outs["service_id"], "an in-place change must keep the server"
    assert (row["rid"], row["firewall"], row["billingcycle"]) == (2, "web", "monthly")
    assert row["rdns"][row["main_ip"]] == "other.fleet.penguinmails.test" and row["status"] == "ACTIVE"
    assert updated["plan_name"].endswith("2 GB")
    upgrade_calls = [
        c["action"]
        for c in sim.calls()
        if c["action"] in ("upgrade_instance", "upgrade_server", "confirm_upgrade")
    ]
    assert upgrade_calls == ["upgrade_instance", "upgrade_server", "confirm_upgrade"]

    provider.delete(created.id, updated)
    assert labelled(sim, label + "-b") == []
    provider.delete(created.id, updated)  # already gone: nothing to do


def test_plan_change_resumes_a_resize_left_waiting_for_confirmation(sim):
    provider = configured(VpsProvider())
    created = provider.create(vps_props(unique("resize")))
    sid = int(created.id)
    client = sim.client()
    client.upgrade_order_create(sid, 3)  # an earlier run ordered and applied it, then died
    client.upgrade_apply(sid)
    sim.clear_log()

    outs = provider.update(created.id, created.outs, {**created.outs, "plan_id": 3}).outs

    assert outs["plan_name"].endswith("4 GB") and outs["status"] == "ACTIVE"
    calls = [c["action"] for c in sim.calls()]
    assert "upgrade_instance" not in calls and "upgrade_server" not in calls
    assert calls.count("confirm_upgrade") == 1


def test_location_or_image_change_replaces_and_terminates_first(sim):
    provider = configured(VpsProvider())
    props = vps_props(unique())
    diff = provider.diff("1", props, {**props, "location_id": 2})
    assert diff.replaces == ["location_id"] and diff.delete_before_replace is True
    assert provider.diff("1", props, {**props, "image": "rocky-9"}).replaces == ["image"]


@pytest.mark.parametrize("mode", ["502", "close"])
def test_create_adopts_instance_after_lost_answer(sim, mode):
    provider = configured(VpsProvider())
    label = unique("lost")
    sim.faults(drop_rate=1.0, drop_actions=["add_instance"], drop_mode=mode)

    created = provider.create(vps_props(label))

    rows = labelled(sim, label)
    assert len(rows) == 1, rows
    assert created.id == str(rows[0]["serviceid"])
    outcomes = [c["outcome"] for c in sim.calls() if c["action"] == "add_instance"]
    assert outcomes == ["fault:dropped"], "the order must be placed once and never repeated"


def test_create_adopts_labelled_instance_left_by_an_earlier_failed_run(sim):
    provider = configured(VpsProvider())
    label = unique("left")
    template = sim.client().image_list()[0]["uuid"]
    sim.client().instance_create(template, 1, 1, label, keys=[OPERATOR], billingcycle="hourly")
    (row,) = labelled(sim, label)
    sim.clear_log()

    created = provider.create(vps_props(label))

    assert created.id == str(row["serviceid"])
    assert len(labelled(sim, label)) == 1
    assert "add_instance" not in sim.stats()["by_action"]


def test_failed_orders_leave_nothing_and_say_how_to_continue(sim):
    provider = configured(VpsProvider(), create_attempts=2)
    label = unique("fail")
    sim.faults(error_rate=1.0, actions=["add_instance"])
    with pytest.raises(HostwindsError) as caught:
        provider.create(vps_props(label))
    assert "Run `pulumi up` again" in caught.value.message
    assert labelled(sim, label) == []
    assert Counter(c["action"] for c in sim.calls())["add_instance"] == 2

    sim.faults(reset=True)
    provider.create(vps_props(label))
    assert len(labelled(sim, label)) == 1


def test_duplicate_labels_are_refused_without_ordering(sim):
    provider = configured(VpsProvider())
    label = unique("dup")
    client = sim.client()
    template = client.image_list()[0]["uuid"]
    for _ in range(2):
        client.instance_create(template, 1, 1, label)
    sim.clear_log()
    with pytest.raises(HostwindsError, match="2 instances carry the label"):
        provider.create(vps_props(label))
    assert "add_instance" not in sim.stats()["by_action"]


def test_build_error_is_reported_and_not_reordered(sim):
    provider = configured(VpsProvider())
    label = unique("err")
    sim.faults(build_error_rate=1.0)
    with pytest.raises(HostwindsError, match="went to ERROR; it is still billed"):
        provider.create(vps_props(label))
    sim.faults(reset=True)
    with pytest.raises(HostwindsError, match="went to ERROR"):
        provider.create(vps_props(label))  # the next run finds the same instance, buys no second one
    assert [row["status"] for row in labelled(sim, label)] == ["ERROR"]


def test_build_timeout_names_the_instance_and_what_happens_next(sim, monkeypatch):
    provider = configured(VpsProvider(), build_timeout_seconds=10)
    assert provider._settings().build_timeout == 10
    # The config allows 10 s at least; the test shortens it to keep the suite fast.
    short = dataclasses.replace(provider._settings(), build_timeout=1.0)
    monkeypatch.setattr(provider, "_settings", lambda: short)
    sim.configure(build_seconds=60)
    label = unique("slow")
    with pytest.raises(HostwindsError, match="still BUILD after 1 s"):
        provider.create(vps_props(label))
    assert len(labelled(sim, label)) == 1


def test_read_sees_gone_instance_and_out_of_band_changes(sim):
    provider = configured(VpsProvider())
    label = unique("drift")
    created = provider.create(vps_props(label))
    sid = int(created.id)
    client = sim.client()
    client.rdns_set(sid, created.outs["main_ip"], "spoofed.example.test")
    client.firewall_set(sid, "web")
    client.instance_rename(sid, label + "-renamed")
    forget_listing(client)

    read = provider.read(created.id, created.outs)
    assert read.outs["rdns"] == "spoofed.example.test"
    assert read.outs["firewall_profile"] == "web"
    assert read.outs["label"] == label + "-renamed"
    assert read.inputs["rdns"] == "spoofed.example.test"
    assert provider.diff(created.id, read.outs, vps_props(label)).changes is True

    client.instance_terminate(sid)
    forget_listing(client)
    assert provider.read(created.id, created.outs).id == ""


def test_concurrent_reads_share_one_listing(sim):
    provider = configured(VpsProvider())
    created = [provider.create(vps_props(unique("share"), wait_until_ready=True)) for _ in range(6)]
    forget_listing(sim.client())
    sim.clear_log()
    threads = [threading.Thread(target=provider.read, args=(c.id, c.outs)) for c in created]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    calls = sim.stats()["by_action"]
    assert calls.get("get_instances") == 1 and "get_instance" not in calls, calls


def test_fleet_ready_waits_for_all_nodes_with_one_listing_per_poll(sim):
    sim.configure(build_seconds=1.5)
    vps = configured(VpsProvider())
    nodes = []
    for index in range(1, 6):
        label = unique(f"fleet{index}")
        outs = vps.create(vps_props(label, wait_until_ready=False)).outs
        assert outs["status"] == "BUILD"
        nodes.append(
            {
                "name": f"mx-{index:02d}",
                "label": label,
                "service_id": outs["service_id"],
                "fqdn": f"mx-{index:02d}.fleet.penguinmails.test",
                "rdns": f"mx-{index:02d}.fleet.penguinmails.test",
                "firewall_profile": "smtp",
            }
        )
    sim.clear_log()

    created = configured(FleetReadyProvider()).create({"nodes": nodes})

    inventory = created.outs["inventory"]
    live = {row["serviceid"]: row for row in sim.instances()}
    assert [n["name"] for n in inventory] == [f"mx-{i:02d}" for i in range(1, 6)]
    for node in inventory:
        row = live[node["service_id"]]
        assert node["ip"] == row["main_ip"] and row["rdns"][row["main_ip"]] == node["fqdn"]
        assert row["firewall"] == "smtp"
    calls = sim.stats()["by_action"]
    assert "get_instance" not in calls, calls
    assert calls["get_instances"] <= 1.5 / 0.1 + 3, calls  # one listing per poll, whatever the node count


def test_ssh_key_is_added_adopted_and_refused_when_different(sim):
    provider = configured(SshKeyProvider())
    name = unique("key")
    public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyDataForTestsOnly0000000000000000000 test"
    assert provider.check({}, {"key_name": name, "public_key": public}).failures == []
    assert [f.property for f in provider.check({}, {"key_name": "bad name", "public_key": "x"}).failures] == [
        "key_name",
        "public_key",
    ]
    created = provider.create({"key_name": name, "public_key": public})
    assert created.id == name
    assert provider.create({"key_name": name, "public_key": public}).id == name  # adopted, not an error
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyDataForTestsOnly000000000000000000 x"
    with pytest.raises(HostwindsError, match="a different key already has this name"):
        provider.create({"key_name": name, "public_key": other})
    assert provider.read(name, created.outs).outs["public_key"] == public
    provider.delete(name, created.outs)
    assert provider.read(name, created.outs).id == ""


def test_resource_from_another_endpoint_is_refused(sim):
    provider = configured(VpsProvider())
    outs = {**vps_props("x"), "endpoint": "http://127.0.0.1:1/cloud/api.php", "service_id": 1}
    with pytest.raises(HostwindsError, match="was created through"):
        provider.read("1", outs)
    with pytest.raises(HostwindsError, match="was created through"):
        provider.delete("1", outs)
