"""VpsFleet under Pulumi mocks: what it declares for N nodes."""

from __future__ import annotations

import pulumi
import pytest

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyDataForTestsOnly0000000000000000000 ops@example"


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args):
        self.resources.append(args)
        state = dict(args.inputs)
        if args.typ.endswith("hostwinds:Vps"):
            state.update(service_id=1000 + len(self.resources), main_ip="198.18.0.9")
        if args.typ.endswith("hostwinds:FleetIdentity"):
            state["tag"] = "k3x9q2m7ab"
        if args.typ.endswith("hostwinds:FleetReady"):
            state["inventory"] = [{"name": n["name"]} for n in args.inputs["nodes"]]
        return f"{args.name}-id", state

    def call(self, args):
        return {}


@pytest.fixture
def mocks():
    recording = RecordingMocks()
    pulumi.runtime.set_mocks(recording, project="penguinmails", stack="unit", preview=False)
    return recording


@pulumi.runtime.test
def test_fleet_declares_keys_nodes_and_one_readiness_step(mocks):
    from modules.config.loader import validate_config
    from modules.hostwinds.fleet import VpsFleet

    config = validate_config(
        {
            "fleet": {
                "nodes": 3,
                "rdns_domain": "fleet.example.com",
                "ssh_key_names": ["portal-key"],
                "ssh_public_keys": [KEY, KEY + " "],
                "plan_id": 2,
            }
        }
    )
    fleet = VpsFleet("pm-fleet", config.fleet)

    def check(inventory):
        by_type: dict[str, list] = {}
        for resource in mocks.resources:
            by_type.setdefault(resource.typ, []).append(resource)
        assert len(by_type["pulumi-python:dynamic/hostwinds:SshKey"]) == 1  # the same key twice is one key
        # Resources register in any order.
        vps = sorted(by_type["pulumi-python:dynamic/hostwinds:Vps"], key=lambda v: v.name)
        assert [v.name for v in vps] == ["pm-fleet-mx-01", "pm-fleet-mx-02", "pm-fleet-mx-03"]
        first = vps[0].inputs
        # The label is chosen by the provider's check from the base and the fleet's random tag.
        assert first["name_base"] == "unit-pm-fleet-mx-01" and first["owner_tag"] == "k3x9q2m7ab"
        assert first["order_budget"] == 3
        assert first["wait_until_ready"] is False and first["plan_id"] == 2
        assert first["rdns"] == "mx-01.fleet.example.com" and first["firewall_profile"] == "smtp"
        assert first["ssh_keys"][0] == "portal-key" and first["ssh_keys"][1].startswith("unit-pm-fleet-")
        assert first["ssh_keys"][1].endswith("-k3x9q2m7ab")
        assert len(by_type["pulumi-python:dynamic/hostwinds:FleetIdentity"]) == 1
        (ready,) = by_type["pulumi-python:dynamic/hostwinds:FleetReady"]
        ids = [n["service_id"] for n in ready.inputs["nodes"]]
        assert len(set(ids)) == 3 and all(isinstance(i, float) for i in ids)  # the nodes' own service ids
        assert ready.inputs["nodes"][0]["fqdn"] == "mx-01.fleet.example.com"
        assert [node["name"] for node in inventory] == ["mx-01", "mx-02", "mx-03"]
        assert by_type["penguinmails:hostwinds:VpsFleet"][0].name == "pm-fleet"

    return fleet.inventory.apply(check)


@pulumi.runtime.test
def test_only_nodes_with_additional_ips_get_a_proof_and_the_inventory_carries_them(mocks):
    from modules.config.loader import validate_config
    from modules.hostwinds.fleet import VpsFleet, sending_addresses

    config = validate_config(
        {"fleet": {"nodes": 2, "rdns_domain": "fleet.example.com", "additional_ips": {"2": ["203.0.113.7"]}}}
    )
    fleet = VpsFleet("pm-fleet", config.fleet)

    def check(inventory):
        proofs = [r for r in mocks.resources if r.typ.endswith("hostwinds:AdditionalIps")]
        assert [p.name for p in proofs] == ["pm-fleet-mx-02-ips"]
        assert proofs[0].inputs["ips"] == [
            {"name": "ip2", "address": "203.0.113.7", "rdns": "mx-02-2.fleet.example.com"}
        ]
        assert proofs[0].inputs["node"] == "mx-02" and isinstance(proofs[0].inputs["service_id"], float)
        assert "additional_ips" not in inventory[0]
        assert inventory[1]["additional_ips"] == [
            {"name": "ip2", "address": "203.0.113.7", "fqdn": "mx-02-2.fleet.example.com"}
        ]
        assert sending_addresses({**inventory[1], "ip": "198.18.0.9"}) == ["198.18.0.9", "203.0.113.7"]

    return fleet.inventory.apply(check)
