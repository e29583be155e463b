"""``AdditionalIps`` called as the engine calls it, against a private memory simulator.

The proof (``get_instance_ips`` of the recorded, owned instance) comes before any change; PTRs are set,
read back as drift after an out-of-band change and restored; a dropped address is only no longer used
(never ``delete_ip``); the simulator refuses rDNS for an address the instance does not have.
"""

from __future__ import annotations

import json
import uuid

import pytest

from modules.hostwinds.additional_ips import AdditionalIpsProvider
from modules.hostwinds.client import HostwindsError, HostwindsInvalidRequest
from modules.hostwinds.common import HostwindsOwnershipError
from modules.providers import ProviderSettings
from tests.support.hostwinds import private_simulator


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with private_simulator(tmp_path_factory.mktemp("hostwinds-ips"), build_seconds=0.1) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _env(sim, monkeypatch):
    monkeypatch.setenv("PENGUINMAILS_HOSTWINDS_ENDPOINT", sim.endpoint)
    monkeypatch.setenv("PENGUINMAILS_HOSTWINDS_API_KEY", sim.api_key)


def provider() -> AdditionalIpsProvider:
    made = AdditionalIpsProvider()
    made.settings = ProviderSettings({"penguinmails:hostwinds": json.dumps({"poll_interval_seconds": 0.1})})
    return made


def node(sim) -> dict:
    """A fresh ACTIVE instance ("ordered in the portal") and the inputs naming it."""
    label = f"ips-{uuid.uuid4().hex[:8]}"
    sid = sim.foreign(label)
    inst = sim.client().instance_get(sid)
    return {"node": "mx-01", "service_id": sid, "label": label, "server_uuid": inst["server_uuid"], "ips": []}


def ip(name: str, address: str) -> dict:
    return {"name": name, "address": address, "rdns": f"mx-01-{name[2:]}.fleet.penguinmails.test"}


def calls(sim, since: int, *actions: str) -> list[dict]:
    return [c for c in sim.calls(since) if c["action"] in actions]


def test_an_assigned_ip_gets_its_ptr_and_drift_is_read_back_and_restored(sim):
    props = node(sim)
    address = sim.assign_ip(props["service_id"])
    props["ips"] = [ip("ip2", address)]
    checked = provider().check({}, props)
    assert checked.failures == []
    created = provider().create(checked.inputs)
    (row,) = [i for i in sim.instances() if i["serviceid"] == props["service_id"]]
    assert row["rdns"][address] == "mx-01-2.fleet.penguinmails.test"
    assert created.outs["ips"] == props["ips"]

    sim.client().rdns_set(props["service_id"], address, "someone.else.example")
    read = provider().read(created.id, created.outs)
    assert read.inputs["ips"][0]["rdns"] == "someone.else.example"
    assert provider().diff(created.id, read.outs, checked.inputs).changes
    provider().update(created.id, read.outs, checked.inputs)
    assert sim.client().rdns_get(props["service_id"], address) == "mx-01-2.fleet.penguinmails.test"
    again = provider().read(created.id, created.outs)
    assert provider().diff(created.id, again.outs, checked.inputs).changes is False


def test_an_address_the_instance_lacks_is_refused_before_any_change(sim):
    props = node(sim)
    mine = sim.assign_ip(props["service_id"])
    other = node(sim)
    theirs = sim.assign_ip(other["service_id"])
    since = sim.calls()[-1]["seq"]
    for missing in ("198.51.100.77", theirs):
        props["ips"] = [ip("ip2", mine), ip("ip3", missing)]
        with pytest.raises(HostwindsError) as refused:
            provider().create(props)
        message = refused.value.message
        assert "\n" not in message and message.startswith("AdditionalIps[mx-01]: ") and missing in message
        assert "Nothing was changed" in message
    # Not even the proven address was touched: the proof covers every address first.
    assert calls(sim, since, "set_rdns") == []
    # The instance's main IP is not an additional one either.
    props["ips"] = [ip("ip2", sim.client().instance_get(props["service_id"])["main_ip"])]
    with pytest.raises(HostwindsError, match="is not an additional IP"):
        provider().create(props)


def test_a_changed_server_is_refused_like_every_node_change(sim):
    props = node(sim)
    props["ips"] = [ip("ip2", sim.assign_ip(props["service_id"]))]
    sim.replace(props["service_id"])  # rebuilt out of band: new server_uuid
    with pytest.raises(HostwindsOwnershipError):
        provider().create(props)


def test_a_dropped_address_is_only_no_longer_used(sim, monkeypatch):
    props = node(sim)
    first, second = sim.assign_ip(props["service_id"]), sim.assign_ip(props["service_id"])
    props["ips"] = [ip("ip2", first), ip("ip3", second)]
    created = provider().create(props)
    warnings: list[str] = []
    monkeypatch.setattr("pulumi.log.warn", lambda message, *a, **k: warnings.append(message))
    fewer = {**props, "ips": [ip("ip2", first)]}
    since = sim.calls()[-1]["seq"]
    provider().check(created.outs, fewer)  # the preview says it first
    provider().update(created.id, created.outs, fewer)
    provider().delete(created.id, {**created.outs, "ips": fewer["ips"]})
    assert len(warnings) == 3 and all("never calls delete_ip" in w for w in warnings)
    assert second in warnings[0] and first in warnings[2]
    assert calls(sim, since, "delete_ip", "change_main_ip") == []
    assert sim.client().instance_get(props["service_id"])["ips"] == [
        sim.client().instance_get(props["service_id"])["main_ip"],
        first,
        second,
    ]


def test_check_names_bad_inputs():
    failures = (
        provider()
        .check(
            {},
            {"node": "mx-01", "ips": [{"name": "x", "address": "1.2.3.4", "rdns": "a.b"}, ip("ip3", "nope")]},
        )
        .failures
    )
    reasons = [f.reason for f in failures]
    assert any("name such as ip2" in r for r in reasons) and any(
        "'nope' is not an IPv4" in r for r in reasons
    )


def test_the_simulator_refuses_rdns_for_an_address_not_on_the_instance(sim):
    props = node(sim)
    with pytest.raises(HostwindsInvalidRequest, match="does not belong"):
        sim.client().rdns_set(props["service_id"], "198.51.100.78", "x.penguinmails.test")
    address = sim.assign_ip(props["service_id"])
    rows = sim.client().ips_get(props["service_id"])
    assert [r["ip"] for r in rows if r.get("main") == 0 and r.get("type") == "IPv4"] == [address]
