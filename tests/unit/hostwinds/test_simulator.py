"""The simulator's account model with a fake clock: states, answers and errors shaped like the real API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlencode

import pytest

from devenv.hostwinds_sim.backends import MemoryBackend
from devenv.hostwinds_sim.model import IMAGES, Account, SimError
from devenv.hostwinds_sim.server import Faults, Simulator

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


# -- order processing ----------------------------------------------------------------------------------

NOT_FOUND = "A valid serviceid is required."


def test_an_order_is_invisible_until_processed_and_only_then_starts_building(clock):
    account = Account(MemoryBackend(), build_seconds=5, processing_seconds=30, clock=clock)
    account.ensure_key("ops", KEY)
    order(account, label="late-1")
    sid = only_sid(account)
    (row,) = account.own_listing()
    assert (row["serviceid"], row["visible"]) == (sid, False)
    clock.now += 29
    assert call(account, "get_instances")["success"] == []
    assert call(account, "get_instance_ids", search="late-1")["success"] == []
    assert call(account, "get_instance_ids")["success"] == []
    for action, extra in [
        ("get_instance", {}),
        ("check_serviceid", {}),
        ("get_instance_ips", {}),
        ("terminate", {}),
        ("edit_instance", {"srvrname": "renamed"}),
        ("set_instance_firewall", {"name": "smtp"}),
    ]:
        with pytest.raises(SimError) as caught:
            call(account, action, serviceid=sid, **extra)
        assert caught.value.message == NOT_FOUND and caught.value.code == "342432"
    assert account.instances[sid].srvrname == "late-1" and account.instances[sid].firewall == "default"

    clock.now += 1  # processed: visible, and the build time starts only now
    assert [r["id"] for r in call(account, "get_instance_ids", search="late-1")["success"]] == [sid]
    assert call(account, "get_instance", serviceid=sid)["success"]["status"] == "BUILD"
    assert account.own_listing()[0]["visible"] is True
    clock.now += 4.9
    assert call(account, "get_instances")["success"][0]["status"] == "BUILD"
    clock.now += 0.1
    assert call(account, "get_instance", serviceid=sid)["success"]["status"] == "ACTIVE"


def test_processing_seconds_apply_to_orders_placed_after_the_change(account, clock):
    order(account, label="before")
    account.processing_seconds = 10
    order(account, label="after")
    shown = [r["srvrname"] for r in call(account, "get_instances")["success"]]
    assert shown == ["before"]
    assert [(r["srvrname"], r["visible"]) for r in account.own_listing()] == [
        ("before", True),
        ("after", False),
    ]


def test_orders_are_counted_ever_and_by_label_and_survive_a_restore(clock):
    account = Account(MemoryBackend(), build_seconds=0, delete_seconds=0, processing_seconds=5, clock=clock)
    order(account, label="web", qty=3, **{"keys[]": []})
    order(account, label="db", **{"keys[]": []})
    assert (account.order_count, dict(account.order_labels)) == (4, {"web": 3, "db": 1})
    clock.now += 5
    for sid in list(account.instances):
        call(account, "terminate", serviceid=sid)
    account.advance_all()
    assert account.instances == {} and account.order_count == 4  # terminated orders still count

    again = Account(MemoryBackend(), clock=clock)
    again.restore(account.snapshot())
    assert (again.order_count, dict(again.order_labels)) == (4, {"web": 3, "db": 1})


def test_a_pending_order_stays_pending_across_a_restore_and_old_snapshots_load_visible(clock):
    account = Account(MemoryBackend(), build_seconds=0, processing_seconds=60, clock=clock)
    account.ensure_key("ops", KEY)
    order(account)
    sid = only_sid(account)
    data = account.snapshot()
    again = Account(MemoryBackend(), clock=clock)
    again.restore(data)
    assert again.instances[sid].visible_at == clock.now + 60 and not again.visible(again.instances[sid])

    old = json.loads(json.dumps(data))  # a snapshot written before visible_at/foreign/order counts existed
    for row in old["instances"]:
        del row["visible_at"], row["foreign"]
    del old["order_count"], old["order_labels"]
    old["instances"][0]["field_from_a_newer_version"] = 1
    legacy = Account(MemoryBackend(), clock=clock)
    legacy.restore(old)
    assert call(legacy, "check_serviceid", serviceid=sid) == {"success": True}
    assert legacy.order_count == 0


# -- admin: replace and foreign instances ------------------------------------------------------------------


def active_sid(account, clock, label="node-1"):
    order(account, label=label)
    clock.now += account.build_seconds + account.processing_seconds
    sid = max(account.instances)
    assert call(account, "get_instance", serviceid=sid)["success"]["status"] == "ACTIVE"
    return sid


def test_replace_gives_a_new_server_under_the_same_service_id(account, clock):
    sid = active_sid(account, clock)
    before = call(account, "get_instance", serviceid=sid)["success"]
    call(account, "shutdown", serviceid=sid)
    account.replace(sid)
    after = call(account, "get_instance", serviceid=sid)["success"]
    assert after["serviceid"] == sid and after["status"] == "ACTIVE"
    assert after["server_uuid"] != before["server_uuid"]
    assert after["password"] != before["password"] and after["configkey"] != before["configkey"]
    assert after["main_ip"] == before["main_ip"] and after["srvrname"] == "node-1"
    assert [r["id"] for r in call(account, "get_instance_ids")["success"]] == [sid]

    account.replace(sid, change_ip=True)
    moved = call(account, "get_instance", serviceid=sid)["success"]
    assert moved["main_ip"] != after["main_ip"] and moved["main_ip"].startswith("198.18.")


def test_replace_refuses_unknown_pending_and_deleting_instances(account, clock):
    with pytest.raises(ValueError, match="no instance 1"):
        account.replace(1)
    account.processing_seconds = 10
    order(account, label="pending")
    with pytest.raises(ValueError, match="being processed"):
        account.replace(max(account.instances))
    account.processing_seconds = 0
    sid = active_sid(account, clock, "doomed")
    call(account, "terminate", serviceid=sid)
    with pytest.raises(ValueError, match="being deleted"):
        account.replace(sid)


def test_a_foreign_instance_is_listed_active_at_once_and_is_not_an_order(clock):
    account = Account(MemoryBackend(), build_seconds=60, processing_seconds=600, clock=clock)
    account.build_fails = lambda: True  # build faults never hit it
    sid = account.add_foreign("dev-penguinmails-fleet-mx-01", 2, "debian-12", 3)
    (shown,) = call(account, "get_instances")["success"]
    assert (shown["serviceid"], shown["status"], shown["srvrname"]) == (
        sid,
        "ACTIVE",
        "dev-penguinmails-fleet-mx-01",
    )
    assert shown["main_ip"].startswith("198.18.") and shown["location_id"] == 2 and shown["product_id"] == "3"
    assert shown["template_uuid"] == IMAGES[0]["uuid"]
    found = call(account, "get_instance_ids", search="fleet-mx-01")["success"]
    assert [r["id"] for r in found] == [sid]
    (row,) = account.own_listing()
    assert row["foreign"] is True and row["visible"] is True
    assert account.order_count == 0
    for bad in ({"image": "windows"}, {"location_id": 9}, {"rid": 99}, {"srvrname": " "}):
        args = {"srvrname": "x", "location_id": 1, "image": "debian-12", "rid": 1, **bad}
        with pytest.raises(ValueError):
            account.add_foreign(**args)


# -- the HTTP front end: faults, admin endpoints -------------------------------------------------------------

API_KEY = "sim-test-key-0123456789"


@pytest.fixture
def sim(clock, bucket):
    account = Account(MemoryBackend(), build_seconds=0, delete_seconds=0, clock=clock)
    account.ensure_key("ops", KEY)
    simulator = Simulator(account, API_KEY, port=0, faults=Faults(seed=7), clock=bucket)
    yield simulator
    simulator.httpd.server_close()


def api(sim, action, **params):
    form = {"action": [action], "API": [API_KEY]}
    form.update({k: (v if isinstance(v, list) else [str(v)]) for k, v in params.items()})
    return sim.api(form)


def order_params():
    return {"template": IMAGES[0]["uuid"], "rid": 1, "location_id": 1, "srvrname": "node-1"}


def outcomes(sim, action):
    return [c["outcome"] for c in sim.log_since(0) if c["action"] == action]


def test_mutating_drop_applies_every_mutation_then_loses_the_answer(sim):
    assert api(sim, "add_instance", **order_params()).status == 200
    (sid,) = sim.account.instances
    sim.set_faults({"mutating_drop_rate": 1.0})
    reply = api(sim, "edit_instance", serviceid=sid, srvrname="renamed")
    assert reply.status == 502 and b"502 Bad Gateway" in reply.body
    assert sim.account.instances[sid].srvrname == "renamed"  # applied, answer lost
    assert api(sim, "set_instance_firewall", serviceid=sid, name="smtp").status == 502
    assert sim.account.instances[sid].firewall == "smtp"
    assert api(sim, "add_ssh_key", name="k2", public_key=KEY).status == 502 and "k2" in sim.account.keys
    # add_instance is a drop_action: drop_rate (0 here) decides for it, not mutating_drop_rate.
    assert api(sim, "add_instance", **order_params()).status == 200
    # Reads are never dropped; neither are refused calls (nothing was applied).
    assert api(sim, "get_instance", serviceid=sid).status == 200
    refused = api(sim, "edit_instance", serviceid=1, srvrname="x")
    assert refused.status == 200 and NOT_FOUND.encode() in refused.body
    assert outcomes(sim, "edit_instance") == ["fault:dropped", "error"]
    sim.set_faults({"drop_mode": "close"})
    closed = api(sim, "terminate", serviceid=sid)
    assert closed.body is None and sim.account.instances[sid].status == "DELETING"


def test_a_throttled_call_is_not_applied_and_says_when_to_retry(sim):
    sim.set_faults({"throttle_rate": 1.0, "retry_after_seconds": 7, "actions": ["add_instance"]})
    reply = api(sim, "add_instance", **order_params())
    assert reply.status == 429 and reply.headers == {"Retry-After": "7"}
    assert reply.content_type == "text/html" and b"429 Too Many Requests" in reply.body
    assert sim.account.instances == {} and sim.account.order_count == 0
    assert api(sim, "get_locations").status == 200  # not in the actions filter
    sim.set_faults({"retry_after_seconds": 0.25})
    assert api(sim, "add_instance", **order_params()).headers == {"Retry-After": "0.25"}
    assert outcomes(sim, "add_instance") == ["fault:429", "fault:429"]
    assert sim.stats()["by_outcome"]["fault:429"] == 2


def test_the_rate_limit_is_a_token_bucket_over_every_call(sim, bucket):
    sim.set_faults({"rate_limit_per_second": 2, "retry_after_seconds": 3})
    statuses = [api(sim, action).status for action in ("get_locations", "get_instances", "get_price_list")]
    assert statuses == [200, 200, 429]  # burst 2
    assert api(sim, "add_instance", **order_params()).status == 429 and sim.account.instances == {}
    bucket.now += 0.5  # one token back
    assert [api(sim, "get_locations").status for _ in range(2)] == [200, 429]
    bucket.now += 60  # refills up to the burst only
    assert [api(sim, "get_locations").status for _ in range(3)] == [200, 200, 429]
    sim.set_faults({"rate_limit_per_second": 0.5})  # burst max(1, rate) = 1, one call per 2 s
    assert [api(sim, "get_locations").status for _ in range(2)] == [200, 429]
    bucket.now += 1.9
    assert api(sim, "get_locations").status == 429
    bucket.now += 0.1
    assert api(sim, "get_locations").status == 200
    sim.set_faults({"rate_limit_per_second": 0})
    assert all(api(sim, "get_locations").status == 200 for _ in range(20))
    assert sim.stats()["by_outcome"]["fault:429"] == 6


def test_new_fault_settings_are_validated():
    faults = Faults.from_dict({"mutating_drop_rate": 0.3, "throttle_rate": 0.1, "rate_limit_per_second": 2})
    assert (faults.retry_after_seconds, faults.mutating_drop_rate, faults.drop_actions) == (
        1,
        0.3,
        ["add_instance"],
    )
    for bad in (
        {"mutating_drop_rate": 1.5},
        {"throttle_rate": -0.1},
        {"throttle_rate": True},
        {"retry_after_seconds": -1},
        {"retry_after_seconds": "1"},
        {"rate_limit_per_second": -2},
    ):
        with pytest.raises(ValueError):
            Faults.from_dict(bad)


@pytest.fixture
def served(sim):
    sim.start()
    yield sim
    sim.httpd.shutdown()


def http(served, path, data=None, form=None):
    """(status, headers, JSON or text) of one request to the running simulator."""
    base = served.url.rsplit("/cloud/", 1)[0]
    body = json.dumps(data).encode() if data is not None else urlencode(form).encode() if form else None
    request = urllib.request.Request(base + path, data=body, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status, headers, raw = answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, exc.headers, exc.read()
    try:
        return status, headers, json.loads(raw)
    except ValueError:
        return status, headers, raw.decode()


def test_a_429_over_http_carries_the_retry_after_header(served):
    served.set_faults({"throttle_rate": 1.0, "retry_after_seconds": 4})
    status, headers, body = http(served, "/cloud/api.php", form={"action": "get_instances", "API": API_KEY})
    assert status == 429 and headers["Retry-After"] == "4" and "Too Many Requests" in body
    # Admin endpoints are never faulted.
    assert http(served, "/_sim/instances")[0] == 200


def test_admin_endpoints_replace_foreign_config_and_stats(served):
    status, _, timing = http(served, "/_sim/config", {"processing_seconds": 30})
    assert status == 200 and timing["processing_seconds"] == 30 and served.account.processing_seconds == 30
    assert http(served, "/_sim/health")[2]["processing_seconds"] == 30
    assert http(served, "/_sim/config", {"processing_seconds": -1})[0] == 400
    assert http(served, "/_sim/config", {"build_seconds": None})[0] == 400

    form = {"action": "add_instance", "API": API_KEY, **order_params()}
    assert http(served, "/cloud/api.php", form=form)[0] == 200
    status, _, foreign = http(
        served, "/_sim/foreign", {"srvrname": "decoy", "location_id": 1, "image": "debian-12", "rid": 1}
    )
    assert status == 200 and foreign["status"] == "ACTIVE"
    listing = {row["srvrname"]: row for row in http(served, "/_sim/instances")[2]}
    assert (listing["node-1"]["visible"], listing["node-1"]["foreign"]) == (False, False)
    assert (listing["decoy"]["visible"], listing["decoy"]["foreign"]) == (True, True)
    status, _, shown = http(served, "/cloud/api.php", form={"action": "get_instances", "API": API_KEY})
    assert [row["serviceid"] for row in shown["success"]] == [foreign["serviceid"]]
    stats = http(served, "/_sim/stats")[2]
    assert (stats["orders"], stats["orders_by_label"]) == (1, {"node-1": 1})

    old_uuid = listing["decoy"]["server_uuid"]
    status, _, replaced = http(served, "/_sim/replace", {"serviceid": foreign["serviceid"]})
    assert status == 200 and replaced["serviceid"] == foreign["serviceid"]
    assert replaced["server_uuid"] != old_uuid
    assert http(served, "/_sim/replace", {"serviceid": listing["node-1"]["serviceid"]})[0] == 400
    assert http(served, "/_sim/replace", {"serviceid": 1})[0] == 400
    assert http(served, "/_sim/replace", {})[0] == 400
    assert (
        http(served, "/_sim/foreign", {"srvrname": "x", "location_id": 1, "image": "nope", "rid": 1})[0]
        == 400
    )
    assert http(served, "/_sim/foreign", {"srvrname": "x"})[0] == 400


def test_an_additional_ip_from_the_portal_is_listed_and_takes_rdns_and_survives_a_restart(account, clock):
    order(account)
    sid = only_sid(account)
    with pytest.raises(ValueError, match="once it is ACTIVE"):
        account.assign_ip(sid)  # still building
    clock.now += 6
    extra = account.assign_ip(sid)
    assert account.assign_ip(sid, extra) == extra  # the same address again: nothing new
    rows = call(account, "get_instance_ips", serviceid=sid)["success"]["IP Addresses"]
    assert [(r["ip"], r["main"]) for r in rows if r["type"] == "IPv4"][1] == (extra, 0)
    call(account, "set_rdns", serviceid=sid, ip=extra, rdns="mx-01-2.fleet.example.com")
    with pytest.raises(SimError, match="does not belong"):
        call(account, "set_rdns", serviceid=sid, ip="198.51.100.9", rdns="x.example.com")
    order(account, "node-2")
    clock.now += 6
    other = max(account.instances)
    with pytest.raises(ValueError, match=f"belongs to instance {sid}"):
        account.assign_ip(other, extra)
    restored = Account(MemoryBackend(), clock=clock)
    restored.restore(json.loads(json.dumps(account.snapshot())))
    rows = call(restored, "get_instance_ips", serviceid=sid)["success"]["IP Addresses"]
    assert {r["ip"]: r["rdns"] for r in rows}[extra] == "mx-01-2.fleet.example.com"
    assert extra in call(restored, "get_instance", serviceid=sid)["success"]["ips"]
