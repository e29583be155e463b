"""The simulator's account model with a fake clock: states, answers and errors shaped like the real API."""

from __future__ import annotations

import pytest

from devenv.hostwinds_sim.backends import MemoryBackend
from devenv.hostwinds_sim.model import IMAGES, Account, SimError
from devenv.hostwinds_sim.server import Faults

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyDataForTestsOnly0000000000000000000 ops"


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def account(clock):
    acc = Account(MemoryBackend(), build_seconds=5, delete_seconds=1, resize_seconds=2, clock=clock)
    acc.ensure_key("ops", KEY)
    return acc


def call(account, action, **params):
    return account.call(action, {k: (v if isinstance(v, list) else [str(v)]) for k, v in params.items()})


def order(account, label="node-1", **extra):
    params = {
        "template": IMAGES[0]["uuid"],
        "rid": 1,
        "location_id": 1,
        "srvrname": label,
        "keys[]": ["ops"],
        **extra,
    }
    return call(account, "add_instance", **params)


def only_sid(account):
    (sid,) = account.instances
    return sid


def test_add_instance_answers_invoice_and_creation_without_an_id(account):
    steps = order(account)
    assert [s["action"] for s in steps] == ["Invoice Paid", "Add Instance"]
    assert all(s["result"] == "success" for s in steps)
    assert "serviceid" not in str(steps)


def test_build_takes_the_build_time_then_the_instance_is_active_with_an_ip(account, clock):
    order(account)
    sid = only_sid(account)
    first = call(account, "get_instance", serviceid=sid)["success"]
    assert first["status"] == "BUILD" and first["main_ip"] == "" and first["password"] and first["configkey"]
    clock.now += 5
    active = call(account, "get_instance", serviceid=sid)["success"]
    assert active["status"] == "ACTIVE" and active["main_ip"].startswith("198.18.") and active["ip_v6"]
    assert active["ssh_keys"] == ["ops"] and active["srvrname"] == "node-1"


def test_validation_errors_use_the_error_envelope(account):
    with pytest.raises(SimError) as caught:
        order(account, location_id=42)
    answer = caught.value.answer()
    assert answer == [
        {"result": "error", "action": "Add Instance", "message": "Location Id is invalid", "ERROR": "5529903"}
    ]
    with pytest.raises(SimError, match="Invalid SSH key name"):
        order(account, **{"keys[]": ["nobody"]})
    with pytest.raises(SimError, match="Invalid Action"):
        call(account, "drop_tables")
    with pytest.raises(SimError, match="A valid serviceid is required"):
        call(account, "get_instance", serviceid=1)


def test_terminate_keeps_the_id_until_the_deletion_is_done(account, clock):
    order(account)
    sid = only_sid(account)
    call(account, "terminate", serviceid=sid)
    assert call(account, "get_instance", serviceid=sid)["success"]["status"] == "DELETING"
    with pytest.raises(SimError, match="A valid serviceid"):
        call(account, "terminate", serviceid=sid)
    clock.now += 1
    with pytest.raises(SimError, match="A valid serviceid"):
        call(account, "check_serviceid", serviceid=sid)


def test_rdns_and_firewall_are_per_instance_and_validated(account, clock):
    order(account)
    sid = only_sid(account)
    clock.now += 5
    ip = call(account, "get_instance", serviceid=sid)["success"]["main_ip"]
    call(account, "set_rdns", serviceid=sid, ip=ip, rdns="mx-1.example.com.")
    ips = call(account, "get_instance_ips", serviceid=sid)["success"]["IP Addresses"]
    assert ips[0] == {"ip": ip, "type": "IPv4", "main": 1, "rdns": "mx-1.example.com"}
    with pytest.raises(SimError, match="does not belong"):
        call(account, "set_rdns", serviceid=sid, ip="203.0.113.9", rdns="x.example.com")
    call(account, "set_instance_firewall", serviceid=sid, name="smtp")
    profile = call(account, "get_instance_firewall_profile", serviceid=sid)["success"]
    assert profile["name"] == "smtp" and {r["port_range_min"] for r in profile["security_group_rules"]} >= {
        25,
        587,
    }
    call(account, "change_main_ip", serviceid=sid)
    assert call(account, "get_instance", serviceid=sid)["success"]["main_ip"] != ip


def test_upgrade_flow_goes_through_resized_and_allows_one_order(account, clock):
    order(account)
    sid = only_sid(account)
    clock.now += 5
    with pytest.raises(SimError, match="No upgrade order"):
        call(account, "check_upgrade_order", serviceid=sid)
    call(account, "upgrade_instance", serviceid=sid, rid=3)
    assert set(call(account, "check_upgrade_order", serviceid=sid)["success"]) == {
        "id",
        "orderid",
        "invoiceid",
        "duedate",
        "total",
    }
    with pytest.raises(SimError, match="already a pending upgrade"):
        call(account, "upgrade_instance", serviceid=sid, rid=4)
    call(account, "upgrade_server", serviceid=sid)
    assert call(account, "get_instance", serviceid=sid)["success"]["status"] == "RESIZE"
    clock.now += 2
    assert call(account, "get_instance", serviceid=sid)["success"]["status"] == "RESIZED"
    call(account, "confirm_upgrade", serviceid=sid)
    done = call(account, "get_instance", serviceid=sid)["success"]
    assert (done["status"], done["product_id"]) == ("ACTIVE", "3")


def test_instance_ids_search_and_pages(account):
    for index in range(7):
        order(account, label=f"web-{index}")
    order(account, label="db-1")
    page1 = call(account, "get_instance_ids", search="web-", limit=5, page=1)["success"]
    page2 = call(account, "get_instance_ids", search="web-", limit=5, page=2)["success"]
    assert len(page1) == 5 and len(page2) == 2
    assert set(page1[0]) == {"id", "hostname", "srvrname", "ips", "dedicatedip", "ip_v6"}


def test_price_list_is_a_php_array_with_string_numbers(account):
    plans = call(account, "get_price_list")["success"]
    assert set(plans) == {"0", "1", "2", "3"} and plans["0"]["rid"] == 1 and plans["0"]["ram"] == "1024"


def test_state_survives_a_snapshot_and_restore(account, clock):
    order(account)
    sid = only_sid(account)
    clock.now += 5
    data = account.snapshot()
    again = Account(MemoryBackend(), clock=clock)
    again.restore(data)
    assert again.render(again.instances[sid])["main_ip"] == account.render(account.instances[sid])["main_ip"]
    assert again.keys == {"ops": KEY}


def test_fault_settings_are_validated():
    faults = Faults.from_dict({"error_rate": 0.2, "drop_rate": 0.1})
    assert (faults.error_rate, faults.drop_actions) == (0.2, ["add_instance"])
    assert Faults.from_dict({"latency_ms": 5}, faults).error_rate == 0.2
    assert Faults.from_dict({"reset": True}, faults).error_rate == 0
    for bad in ({"error_rate": 2}, {"nonsense": 1}, {"drop_mode": "maybe"}, {"latency_ms": -1}):
        with pytest.raises(ValueError):
            Faults.from_dict(bad)
