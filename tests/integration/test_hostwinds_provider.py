"""The Hostwinds providers called directly (as the engine calls them) against a private memory simulator."""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections import Counter

import pytest

from modules.errors import PartialFailure
from modules.hostwinds.client import HostwindsError
from modules.hostwinds.common import HostwindsOwnershipError
from modules.hostwinds.resources import (
    LEDGER,
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
    LEDGER.__init__()  # each test is its own run: one provider process per `up`
    yield
    sim.faults(reset=True)
    sim.configure(processing_seconds=0)


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
    assert outs["server_uuid"] == next(r for r in sim.instances() if r["srvrname"] == label)["server_uuid"]
    assert outs["order_pending"] is False
    assert outs["status"] == "ACTIVE" and outs["main_ip"] == row["main_ip"] and outs["ipv6"]
    assert row["rdns"][row["main_ip"]] == props["rdns"] and row["firewall"] == "smtp"
    assert row["keys"] == [OPERATOR]
    assert "password" not in json.dumps(outs) and row["password"] not in json.dumps(outs)
    assert row["configkey"] not in json.dumps(outs)
    assert provider.read(created.id, outs).outs == outs  # nothing drifted

    news = {
        **props,
        "rdns": "other.fleet.penguinmails.test",
        "firewall_profile": "web",
        "billing_cycle": "monthly",
        "plan_id": 2,
    }
    diff = provider.diff(created.id, outs, news)
    assert diff.changes and diff.replaces == []
    updated = provider.update(created.id, outs, news).outs
    (row,) = labelled(sim, label)
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

    assert updated["server_uuid"] == outs["server_uuid"] and updated["label"] == label

    provider.delete(created.id, updated)
    assert labelled(sim, label) == []
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


def short_timeouts(provider, monkeypatch, seconds: float = 1.5):
    """The config allows a 10 s build timeout at least; tests shorten it to stay fast."""
    short = dataclasses.replace(provider._settings(), build_timeout=seconds)
    monkeypatch.setattr(provider, "_settings", lambda: short)
    return provider


def test_an_order_whose_answer_is_a_5xx_page_is_waited_for_never_sent_twice(sim, monkeypatch):
    provider = short_timeouts(configured(VpsProvider(), create_attempts=3), monkeypatch)
    label = unique("fail")
    sim.faults(error_rate=1.0, actions=["add_instance"])  # a 5xx page: nobody can tell it was not applied
    with pytest.raises(PartialFailure) as caught:
        provider.create(vps_props(label))
    assert "an order may exist" in caught.value.message and label in caught.value.message
    assert "Run `pulumi up` again" in caught.value.message
    assert caught.value.id == label and caught.value.outs["order_pending"] is True
    assert Counter(c["action"] for c in sim.calls())["add_instance"] == 1


def test_an_answer_that_proves_nothing_was_ordered_allows_a_new_order(sim, monkeypatch):
    provider = configured(VpsProvider(), create_attempts=2)
    label = unique("throttled")
    # 429s prove the call was refused unapplied: the client waits Retry-After and sends it again.
    sim.faults(throttle_rate=1.0, retry_after_seconds=0, actions=["add_instance"])
    with pytest.raises(HostwindsError, match="nothing was ordered"):
        provider.create(vps_props(label))
    assert labelled(sim, label) == []
    sim.faults(reset=True)
    with pytest.raises(HostwindsError, match="refused the order, nothing was ordered"):
        provider.create(vps_props(unique("invalid"), plan_id=99))
    provider.create(vps_props(label))
    assert len(labelled(sim, label)) == 1
    assert sim.stats()["orders_by_label"][label] == 1


def test_an_order_slower_than_the_wait_is_recorded_pending_and_resumed_without_a_second_order(
    sim, monkeypatch
):
    provider = short_timeouts(configured(VpsProvider()), monkeypatch)
    label = unique("slow-order")
    sim.configure(processing_seconds=3)
    with pytest.raises(PartialFailure) as caught:
        provider.create(vps_props(label))
    pending = caught.value.outs
    assert pending["service_id"] is None and pending["label"] == label
    assert [r["visible"] for r in sim.instances() if r["srvrname"] == label] == [False]
    assert provider.diff(label, pending, vps_props(label)).changes is True

    LEDGER.__init__()  # the next `up`
    resumed = configured(VpsProvider())
    outs = resumed.update(label, pending, vps_props(label)).outs
    (row,) = labelled(sim, label)
    assert outs["service_id"] == row["serviceid"] and outs["status"] == "ACTIVE"
    assert outs["server_uuid"] == row["server_uuid"] and outs["order_pending"] is False
    assert sim.stats()["orders_by_label"][label] == 1, "resuming must never order again"

    resumed.delete(label, outs)  # the id stays the label; the service id comes from the outputs
    assert labelled(sim, label) == []


def test_destroy_terminates_an_order_that_shows_only_later(sim, monkeypatch):
    provider = short_timeouts(configured(VpsProvider()), monkeypatch)
    label = unique("late")
    sim.configure(processing_seconds=2.5)
    with pytest.raises(PartialFailure) as caught:
        provider.create(vps_props(label))
    sim.configure(processing_seconds=0)
    patient = short_timeouts(configured(VpsProvider()), monkeypatch, seconds=10)
    patient.delete(label, caught.value.outs)
    assert labelled(sim, label) == [] and not [r for r in sim.instances() if r["srvrname"] == label]


def test_an_instance_replaced_under_the_same_id_is_refused(sim):
    provider = configured(VpsProvider())
    label = unique("swapped")
    created = provider.create(vps_props(label))
    swapped = sim.replace(created.outs["service_id"])
    forget_listing(sim.client())
    sim.clear_log()
    for call in (
        lambda: provider.read(created.id, created.outs),
        lambda: provider.update(created.id, created.outs, {**created.outs, "firewall_profile": "web"}),
        lambda: provider.delete(created.id, created.outs),
    ):
        with pytest.raises(HostwindsOwnershipError) as caught:
            call()
        assert swapped["server_uuid"] in caught.value.message
        assert created.outs["server_uuid"] in caught.value.message
    mutations = {"terminate", "set_instance_firewall", "set_rdns", "edit_instance"}
    assert not mutations & set(sim.stats()["by_action"]), "nothing may be changed on a server not ours"
    assert labelled(sim, label)[0]["status"] == "ACTIVE"


def test_a_node_recorded_before_uuids_learns_its_uuid_from_its_recorded_label(sim):
    provider = configured(VpsProvider())
    label = unique("legacy")
    created = provider.create(vps_props(label))
    legacy = {k: v for k, v in created.outs.items() if k not in ("server_uuid", "order_pending")}
    outs = provider.update(created.id, legacy, vps_props(label)).outs
    assert outs["server_uuid"] == created.outs["server_uuid"]
    renamed = {**legacy, "label": label + "-elsewhere"}
    with pytest.raises(HostwindsOwnershipError, match="refusing to change or terminate"):
        provider.delete(created.id, renamed)
    assert len(labelled(sim, label)) == 1


def test_duplicate_labels_are_refused_without_ordering(sim):
    provider = configured(VpsProvider())
    label = unique("dup")
    client = sim.client()
    template = client.image_list()[0]["uuid"]
    for _ in range(2):
        client.instance_create(template, 1, 1, label)
    sim.clear_log()
    with pytest.raises(HostwindsError, match="2 instances carry our label"):
        provider.create(vps_props(label))
    assert "add_instance" not in sim.stats()["by_action"]


def test_build_error_is_reported_and_not_reordered(sim):
    provider = configured(VpsProvider())
    label = unique("err")
    sim.faults(build_error_rate=1.0)
    with pytest.raises(PartialFailure, match="went to ERROR; it is still billed") as caught:
        provider.create(vps_props(label))
    assert caught.value.outs["service_id"] is not None  # recorded, so `destroy` terminates it
    sim.faults(reset=True)
    LEDGER.__init__()
    with pytest.raises(PartialFailure, match="went to ERROR"):
        provider.create(vps_props(label))  # the next run finds the same instance, buys no second one
    assert [row["status"] for row in labelled(sim, label)] == ["ERROR"]


def test_build_timeout_names_the_instance_and_what_happens_next(sim, monkeypatch):
    provider = configured(VpsProvider(), build_timeout_seconds=10)
    assert provider._settings().build_timeout == 10
    short_timeouts(provider, monkeypatch, seconds=1.0)
    sim.configure(build_seconds=60)
    label = unique("slow")
    with pytest.raises(PartialFailure, match="still BUILD after 1 s") as caught:
        provider.create(vps_props(label))
    (row,) = labelled(sim, label)
    # The server exists: it is recorded (partial state) so the next `up` waits for it instead of ordering.
    assert caught.value.id == str(row["serviceid"]) and caught.value.outs["service_id"] == row["serviceid"]


def test_read_sees_gone_instance_and_out_of_band_changes(sim):
    provider = configured(VpsProvider())
    label = unique("drift")
    created = provider.create(vps_props(label))
    sid = int(created.id)
    client = sim.client()
    client.rdns_set(sid, created.outs["main_ip"], "spoofed.example.test")
    client.firewall_set(sid, "web")
    forget_listing(client)

    read = provider.read(created.id, created.outs)
    assert read.outs["rdns"] == "spoofed.example.test"
    assert read.outs["firewall_profile"] == "web"
    assert read.inputs["rdns"] == "spoofed.example.test"
    assert provider.diff(created.id, read.outs, vps_props(label)).changes is True

    # A label changed behind our back is not adopted as the new truth: it is refused, naming both.
    client.instance_rename(sid, label + "-renamed")
    forget_listing(client)
    with pytest.raises(HostwindsOwnershipError, match=f"now labelled '{label}-renamed', not '{label}'"):
        provider.read(created.id, created.outs)
    client.instance_rename(sid, label)

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
                "server_uuid": outs["server_uuid"],
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
    assert calls.get("get_instance") == 5, calls  # one fresh read per node, right before changing it
    assert calls["get_instances"] <= 1.5 / 0.1 + 3, calls  # one listing per poll, whatever the node count
    assert created.outs["nodes"][0]["server_uuid"] == nodes[0]["server_uuid"]

    # A node swapped under the same id is refused before anything is changed on it.
    sim.replace(nodes[0]["service_id"])
    forget_listing(sim.client())
    with pytest.raises(HostwindsOwnershipError, match="mx-01"):
        configured(FleetReadyProvider()).create({"nodes": nodes})


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


def test_an_order_whose_answer_cannot_be_read_is_pending_never_sent_again(sim, monkeypatch):
    from modules.hostwinds.client import HostwindsClient

    provider = short_timeouts(configured(VpsProvider()), monkeypatch)
    label = unique("garbled")
    sim.configure(processing_seconds=5)
    real = HostwindsClient.instance_create

    def garbled(self, *args, **kwargs):
        real(self, *args, **kwargs)  # the order is placed …
        raise HostwindsError("Hostwinds add_instance: unexpected answer shape (str)", "add_instance")

    monkeypatch.setattr(HostwindsClient, "instance_create", garbled)
    with pytest.raises(PartialFailure, match="an order may exist"):
        provider.create(vps_props(label))
    assert sim.stats()["orders_by_label"][label] == 1


def test_a_fleet_replacement_under_the_same_label_never_takes_the_old_server(sim):
    provider = configured(VpsProvider())
    tag = "k3x9q2m7ab"
    props = vps_props(f"{unique('swap')}-{tag}", wait_until_ready=False, owner_tag=tag)
    old = provider.create(props)
    provider.read(old.id, old.outs)  # the shared listing now shows the old server under the label
    provider.delete(old.id, old.outs)  # a fleet node: terminates and returns at once
    LEDGER.__init__()  # the replacement's create, as in the run after the one that ordered the old server
    new = provider.create({**props, "location_id": 2})
    assert new.outs["service_id"] != old.outs["service_id"]
    assert sim.stats()["orders_by_label"][props["label"]] == 2


def test_fleet_identity_delete_waits_for_terminated_nodes_and_never_terminates_a_stranger(sim):
    from modules.hostwinds.identity import FleetIdentityProvider

    tag = "m7abk3x9q2"
    vps = configured(VpsProvider())
    node = vps.create(vps_props(f"{unique('node')}-{tag}", wait_until_ready=False, owner_tag=tag))
    vps.delete(node.id, node.outs)
    identity = configured(FleetIdentityProvider())
    identity.delete(tag, {"tag": tag})  # returns once the node has left the listing
    assert not [r for r in sim.instances() if r["serviceid"] == node.outs["service_id"]]

    unclaimed = sim.foreign(f"someone-{tag}")
    forget_listing(sim.client())
    with pytest.raises(
        HostwindsError, match=f"no node of the state claimed them: someone-{tag} \\({unclaimed}\\)"
    ):
        identity.delete(tag, {"tag": tag})
    assert [r["status"] for r in sim.instances() if r["serviceid"] == unclaimed] == ["ACTIVE"]
    assert "terminate" not in {
        c["action"] for c in sim.calls() if c["params"].get("serviceid") == str(unclaimed)
    }
