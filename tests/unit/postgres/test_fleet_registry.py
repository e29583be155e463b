"""FleetNode's inputs: Outputs from the fleet's inventory pass through as they are."""

from __future__ import annotations

import pulumi

from modules.postgres.fleet_registry import FleetNodeArgs


def test_props_take_outputs_without_copying_them():
    ip = pulumi.Output.from_input("192.0.2.61")
    props = FleetNodeArgs(
        tier="oltp", database="pm_dev_oltp", mark="pulumi:penguinmails/dev/mx-01", server_id="1",
        hostname="mx-01.example.net", ip=ip,
    ).props()  # fmt: skip
    assert props["ip"] is ip
    assert (props["vps_id"], props["ip_id"], props["drift"]) == (None, None, [])
