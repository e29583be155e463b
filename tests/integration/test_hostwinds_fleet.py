"""The Hostwinds fleet through the real engine against a private memory simulator.

The stacks run the fleet alone (``tests/support/hostwinds_program``) from the real config model, so other
parts of the platform neither slow these tests nor break them. Counts come from the simulator's own listing
and call log, not from what the provider believes.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from pulumi import automation as auto

from tests.support.hostwinds import fleet_stack, private_simulator

pytestmark = pytest.mark.engine

VPS_TYPE = "pulumi-python:dynamic/hostwinds:Vps"


def _state_resources(stack: auto.Stack) -> list[dict]:
    return stack.export_stack().deployment["resources"]


def _vps_ids(stack: auto.Stack) -> list[int]:
    return sorted(int(r["id"]) for r in _state_resources(stack) if r["type"] == VPS_TYPE)


def _up_until_converged(stack: auto.Stack, output: list[str], runs: int = 3) -> int:
    """`pulumi up` until it succeeds (each failed run must leave a state the next run can finish)."""
    for attempt in range(1, runs + 1):
        try:
            stack.up(color="never", on_output=output.append)
            return attempt
        except auto.CommandError as error:
            output.append(str(error))
    raise AssertionError(f"the fleet did not converge in {runs} runs:\n" + "\n".join(output[-60:]))


def _assert_no_secret(texts: list[str], secrets: list[str]) -> None:
    for secret in secrets:
        for text in texts:
            assert secret not in text, "a secret value appeared in captured output or state"


def test_fleet_converges_under_20_percent_faults_without_duplicates_or_orphans(tmp_path):
    output: list[str] = []
    with private_simulator(tmp_path / "sim", build_seconds=1.0) as sim:
        stack = fleet_stack(tmp_path, sim, "faults", nodes=10)
        # One call in five fails before it is applied (5xx HTML), and one add_instance answer in five is lost
        # after the server was bought.
        sim.faults(error_rate=0.2, drop_rate=0.2, drop_actions=["add_instance"], seed=7)

        runs = _up_until_converged(stack, output)

        live = sim.instances(secrets=True)
        labels = Counter(row["srvrname"] for row in live)
        assert len(live) == 10, f"expected 10 instances, the simulator has {len(live)}: {labels}"
        assert max(labels.values()) == 1, f"duplicate labels: {labels}"
        assert sorted(row["serviceid"] for row in live) == _vps_ids(stack), (
            "orphans: not every instance is in state"
        )
        assert all(row["status"] == "ACTIVE" for row in live)
        assert all(row["rdns"].get(row["main_ip"], "").endswith(".fleet.penguinmails.test") for row in live)
        assert all(row["firewall"] == "smtp" for row in live)
        stats = sim.stats()
        assert stats["by_outcome"].get("fault:dropped", 0) + stats["by_outcome"].get("fault:500", 0) > 0, (
            stats
        )

        outputs = stack.outputs()
        inventory = outputs["fleet_nodes"].value
        assert [node["name"] for node in inventory] == [f"mx-{i:02d}" for i in range(1, 11)]
        assert {node["ip"] for node in inventory} == {row["main_ip"] for row in live}

        # Still faulty, and nothing to do: a preview proposes no change.
        stack.preview(color="never", expect_no_changes=True, on_output=output.append)

        # No secret in anything captured: the API key, root passwords, config keys.
        state_texts = [p.read_text() for p in (tmp_path / "state" / "backend").rglob("*.json")]
        secrets = [sim.api_key] + [row["password"] for row in live] + [row["configkey"] for row in live]
        _assert_no_secret(output + state_texts + [json.dumps(stack.export_stack().deployment)], secrets)

        stack.destroy(color="never", on_output=output.append)
        assert sim.instances() == []
        stack.workspace.remove_stack("faults")
    print(f"converged in {runs} run(s)")


def test_refresh_and_preview_show_drift_and_up_repairs_it(tmp_path):
    with private_simulator(tmp_path / "sim", build_seconds=0.5) as sim:
        stack = fleet_stack(tmp_path, sim, "drift", nodes=3)
        stack.up(color="never")
        by_name = {row["srvrname"]: row for row in sim.instances()}
        assert len(by_name) == 3
        gone, renamed, moved = (by_name[f"drift-penguinmails-fleet-mx-0{i}"] for i in (1, 2, 3))

        # A no-op preview reads nothing per node; a refresh lists once (plus rDNS/firewall per node).
        sim.clear_log()
        stack.preview(color="never", expect_no_changes=True)
        assert "get_instance" not in sim.stats()["by_action"]
        stack.refresh(color="never")
        calls = sim.stats()["by_action"]
        assert calls.get("get_instances") == 1 and "get_instance" not in calls, calls

        # Out of band: one node terminated, one node's rDNS changed, one node's main IP changed.
        client = sim.client()
        client.instance_terminate(gone["serviceid"])
        client.rdns_set(renamed["serviceid"], renamed["main_ip"], "elsewhere.example.test")
        client.main_ip_change(moved["serviceid"])

        stack.refresh(color="never")
        state_ids = _vps_ids(stack)
        assert gone["serviceid"] not in state_ids, "refresh kept a terminated instance"
        moved_state = next(r for r in _state_resources(stack) if r.get("id") == str(moved["serviceid"]))
        new_ip = moved_state["outputs"]["main_ip"]
        assert new_ip and new_ip != moved["main_ip"], "refresh did not see the new main IP"

        preview_lines: list[str] = []
        preview = stack.preview(color="never", diff=True, on_output=preview_lines.append)
        text = "\n".join(preview_lines)
        assert preview.change_summary.get("create") == 1, preview.change_summary
        assert preview.change_summary.get("update", 0) >= 2, preview.change_summary
        assert "elsewhere.example.test" in text and "mx-02.fleet.penguinmails.test" in text, text

        stack.up(color="never")
        live = {row["srvrname"]: row for row in sim.instances()}
        assert len(live) == 3
        assert live[gone["srvrname"]]["serviceid"] != gone["serviceid"]  # a new server took the label
        assert live[renamed["srvrname"]]["rdns"][renamed["main_ip"]] == "mx-02.fleet.penguinmails.test"
        assert live[moved["srvrname"]]["rdns"][new_ip] == "mx-03.fleet.penguinmails.test"
        inventory = {node["name"]: node for node in stack.outputs()["fleet_nodes"].value}
        assert inventory["mx-03"]["ip"] == new_ip
        assert inventory["mx-01"]["service_id"] == live[gone["srvrname"]]["serviceid"]
        stack.preview(color="never", expect_no_changes=True)

        stack.destroy(color="never")
        assert sim.instances() == []
        stack.workspace.remove_stack("drift")
