"""The Hostwinds fleet through the real engine against a private memory simulator.

The stacks run the fleet alone (``tests/support/hostwinds_program``) from the real config model, so other
parts of the platform neither slow these tests nor break them. Counts come from the simulator's own listing
and call log, not from what the provider believes.
"""

from __future__ import annotations

import json

import pytest
from pulumi import automation as auto

from tests.support.hostwinds import fleet_stack, private_simulator

pytestmark = pytest.mark.engine

VPS_TYPE = "pulumi-python:dynamic/hostwinds:Vps"


def _state_resources(stack: auto.Stack) -> list[dict]:
    return stack.export_stack().deployment["resources"]


def _vps_ids(stack: auto.Stack) -> list[int]:
    """Service ids in state (an output: a node whose order showed late keeps its label as its id)."""
    return sorted(int(r["outputs"]["service_id"]) for r in _state_resources(stack) if r["type"] == VPS_TYPE)


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


def _ours(sim, stack_name: str) -> list[dict]:
    """The simulator's instances this stack ordered (decoys are foreign), pending orders included."""
    return [row for row in sim.instances(secrets=True) if not row["foreign"]]


# Every API action except add_instance: a 5xx page on an order cannot be told apart from a lost answer,
# so the provider must treat it as "maybe ordered" (the lost-answer faults below model that case).
NON_ORDER_ACTIONS = [
    "get_instances", "get_instance", "get_instance_ids", "check_serviceid", "get_instance_ips",
    "get_instance_firewall_profile", "get_locations", "get_public_images", "get_price_list",
    "set_rdns", "set_instance_firewall", "terminate",
]  # fmt: skip


def test_fleet_converges_under_slow_orders_lost_answers_and_502s_without_a_second_order(tmp_path):
    output: list[str] = []
    with private_simulator(tmp_path / "sim", build_seconds=1.0, processing_seconds=12) as sim:
        stack = fleet_stack(tmp_path, sim, "faults", nodes=10, hostwinds={"build_timeout_seconds": 10})
        # Decoys: the exact label this stack used before labels carried a tag, and a look-alike of the new
        # form. Neither is ours: neither may be read into state, changed or terminated.
        legacy = sim.foreign("faults-penguinmails-fleet-mx-03")
        lookalike = sim.foreign("faults-penguinmails-fleet-mx-03-aaaaaaaaaa")
        # Order processing (12 s) outlasts the wait for a label (10 s); 30 % of add_instance answers and
        # 10 % of other mutating answers are lost after being applied; 10 % of other calls get a 502 page.
        sim.faults(
            drop_rate=0.3,
            drop_actions=["add_instance"],
            mutating_drop_rate=0.1,
            error_rate=0.1,
            actions=NON_ORDER_ACTIONS,
            seed=11,
        )

        runs = _up_until_converged(stack, output)

        assert 2 <= runs <= 3, "the first run cannot see orders processed after its wait"
        live = [row for row in _ours(sim, "faults") if row["status"] != "DELETING"]
        stats = sim.stats()
        assert stats["orders"] == 10, f"duplicate orders: {stats['orders_by_label']}"
        assert max(stats["orders_by_label"].values()) == 1, stats["orders_by_label"]
        assert (
            stats["by_outcome"].get("fault:dropped", 0) > 0
            and stats["by_outcome"].get("fault:502", 0)
            + stats["by_outcome"].get("fault:500", 0)
            + stats["by_outcome"].get("fault:503", 0)
            > 0
        ), stats
        assert len(live) == 10 and sorted(row["serviceid"] for row in live) == _vps_ids(stack), (
            "orphans: not every instance we ordered is in state"
        )
        tag = next(r for r in _state_resources(stack) if r["type"].endswith("FleetIdentity"))["outputs"][
            "tag"
        ]
        assert all(
            row["srvrname"].startswith("faults-") and row["srvrname"].endswith("-" + tag) for row in live
        )
        assert all(row["status"] == "ACTIVE" for row in live)
        assert all(row["rdns"].get(row["main_ip"], "").endswith(".fleet.penguinmails.test") for row in live)
        assert all(row["firewall"] == "smtp" for row in live)

        decoys = {row["serviceid"]: row for row in sim.instances() if row["foreign"]}
        assert set(decoys) == {legacy, lookalike}
        assert all(row["firewall"] == "default" and row["rdns"] == {} for row in decoys.values())
        assert not {legacy, lookalike} & set(_vps_ids(stack))

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
        assert _ours(sim, "faults") == [], "destroy left servers of the stack behind"
        assert {row["serviceid"] for row in sim.instances()} == {legacy, lookalike}, "a decoy was terminated"
        assert sim.stats()["orders"] == 10
        stack.workspace.remove_stack("faults")
    print(f"converged in {runs} run(s)")


def test_two_checkouts_with_one_stack_name_each_manage_only_their_own_nodes(tmp_path):
    with private_simulator(tmp_path / "sim", build_seconds=0.5) as sim:
        first = fleet_stack(tmp_path / "a", sim, "dev", nodes=2)
        second = fleet_stack(tmp_path / "b", sim, "dev", nodes=2)
        first.up(color="never")
        second.up(color="never")
        a_ids, b_ids = set(_vps_ids(first)), set(_vps_ids(second))
        assert len(a_ids) == len(b_ids) == 2 and not a_ids & b_ids
        assert len(sim.instances()) == 4

        # The second checkout's node swapped behind its back is refused, naming both uuids.
        victim = sorted(b_ids)[0]
        recorded = next(
            r["outputs"] for r in _state_resources(second) if r.get("outputs", {}).get("service_id") == victim
        )
        swapped = sim.replace(victim)
        with pytest.raises(auto.CommandError) as caught:
            second.up(color="never", refresh=True)
        text = str(caught.value)
        assert recorded["server_uuid"] in text and swapped["server_uuid"] in text and "refusing" in text

        first.destroy(color="never")
        left = {row["serviceid"] for row in sim.instances()}
        assert left == b_ids, "destroying one checkout touched the other's servers"
        assert first.export_stack().deployment.get("resources") in (None, [])
        first.workspace.remove_stack("dev")


def test_refresh_and_preview_show_drift_and_up_repairs_it(tmp_path):
    with private_simulator(tmp_path / "sim", build_seconds=0.5) as sim:
        stack = fleet_stack(tmp_path, sim, "drift", nodes=3)
        stack.up(color="never")
        by_name = {row["srvrname"].rsplit("-", 1)[0]: row for row in sim.instances()}
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
        moved_state = next(
            r for r in _state_resources(stack) if r.get("outputs", {}).get("service_id") == moved["serviceid"]
        )
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


OLD_NAMING = ("name_base", "owner_tag", "order_budget", "server_uuid", "order_pending", "ordered_at")


def _as_before_tags(deployment: dict, sim) -> dict:
    """The state as the code before fleet tags wrote it: labels ``<stack>-<resource>``, no uuid, no tag.

    The servers are renamed to those labels too, so the stack looks exactly like one made by that code.
    """
    identity = next(r["urn"] for r in deployment["resources"] if r["type"].endswith("FleetIdentity"))
    client = sim.client()
    resources = []
    for resource in deployment["resources"]:
        if resource["urn"] == identity:
            continue
        resource["dependencies"] = [d for d in resource.get("dependencies", []) if d != identity]
        for prop, deps in list((resource.get("propertyDependencies") or {}).items()):
            resource["propertyDependencies"][prop] = [d for d in deps if d != identity]
        if resource["type"] == VPS_TYPE:
            base = resource["inputs"]["name_base"]
            for part in ("inputs", "outputs"):
                for key in OLD_NAMING:
                    resource[part].pop(key, None)
                resource[part]["label"] = base
            client.instance_rename(int(resource["id"]), base)
        if resource["type"].endswith("FleetReady"):
            for part in ("inputs", "outputs"):
                for node in resource[part]["nodes"]:
                    node.pop("server_uuid", None)
                    node["label"] = node["label"].rsplit("-", 1)[0]
        resources.append(resource)
    deployment["resources"] = resources
    return deployment


def test_a_stack_from_before_fleet_tags_upgrades_in_place_and_never_adopts_an_old_style_label(tmp_path):
    with private_simulator(tmp_path / "sim", build_seconds=0.5) as sim:
        stack = fleet_stack(tmp_path, sim, "legacy", nodes=2)
        stack.up(color="never")
        state = stack.export_stack()
        state.deployment = _as_before_tags(state.deployment, sim)
        stack.import_stack(state)
        before = {row["serviceid"]: row for row in sim.instances()}
        assert sorted(row["srvrname"] for row in before.values()) == [
            "legacy-penguinmails-fleet-mx-01",
            "legacy-penguinmails-fleet-mx-02",
        ]
        # A server a person labelled exactly like the old code would label a third node.
        decoy = sim.foreign("legacy-penguinmails-fleet-mx-03")

        result = stack.up(color="never")
        changes = result.summary.resource_changes or {}
        assert not changes.get("replace") and not changes.get("delete"), changes
        vps = [r for r in _state_resources(stack) if r["type"] == VPS_TYPE]
        assert sorted(int(r["id"]) for r in vps) == sorted(before), "the old nodes must be kept"
        for resource in vps:
            live = before[int(resource["id"])]
            assert resource["outputs"]["label"] == live["srvrname"], "an old label is kept, not renamed"
            assert resource["outputs"]["server_uuid"] == next(
                r["server_uuid"] for r in sim.instances() if r["serviceid"] == live["serviceid"]
            )
        stack.preview(color="never", expect_no_changes=True)

        # One more node: it gets a tagged label; the old-style decoy is neither adopted nor touched.
        fleet = json.loads(stack.get_config("penguinmails:fleet").value)
        stack.set_config("penguinmails:fleet", auto.ConfigValue(json.dumps({**fleet, "nodes": 3})))
        stack.up(color="never")
        ids = _vps_ids(stack)
        assert len(ids) == 3 and decoy not in ids
        decoy_row = next(r for r in sim.instances() if r["serviceid"] == decoy)
        assert decoy_row["firewall"] == "default" and decoy_row["rdns"] == {}
        stack.destroy(color="never")
        assert [row["serviceid"] for row in sim.instances()] == [decoy]
        stack.workspace.remove_stack("legacy")


def test_orphans_are_listed_by_the_stack_tag_and_terminated_only_on_request(tmp_path):
    from typer.testing import CliRunner

    from modules.cli.main import app

    with private_simulator(tmp_path / "sim", build_seconds=0.3) as sim:
        stack = fleet_stack(tmp_path, sim, "orph", nodes=1)
        stack.up(color="never")
        tag = next(r for r in _state_resources(stack) if r["type"].endswith("FleetIdentity"))["outputs"][
            "tag"
        ]
        # What a run that crashed after ordering leaves: a server with our tag that the state lacks,
        # beside a stranger's server with a look-alike label.
        orphan = sim.foreign(f"orph-penguinmails-fleet-mx-07-{tag}")
        stranger = sim.foreign("orph-penguinmails-fleet-mx-08-zzzzzzzzzz")
        env = {**stack.workspace.env_vars, "PULUMI_HOME": stack.workspace.env_vars["PULUMI_HOME"]}
        runner = CliRunner()
        args = ["fleet", "orphans", "--stack", "orph", "--cwd", stack.workspace.work_dir, "--json"]
        listed = runner.invoke(app, args, env=env)
        assert listed.exit_code == 3, listed.output
        rows = json.loads(listed.output)
        assert [row["service_id"] for row in rows] == [orphan]

        refused = runner.invoke(app, [*args, "--terminate"], env=env)
        assert refused.exit_code != 0 and orphan in {r["serviceid"] for r in sim.instances()}
        done = runner.invoke(app, [*args, "--terminate", "--yes"], env=env)
        assert done.exit_code == 0, done.output
        left = {row["serviceid"] for row in sim.instances()}
        assert orphan not in left and stranger in left and set(_vps_ids(stack)) <= left
        stack.destroy(color="never")
        stack.workspace.remove_stack("orph")


def test_expected_failures_read_as_one_line_per_node_and_tracebacks_only_when_asked(tmp_path):
    with private_simulator(tmp_path / "sim", build_seconds=0.3) as sim:
        sim.faults(unauthorized_rate=1.0, actions=["add_instance"])
        for verbose in (False, True):
            extra = {"PENGUINMAILS_TRACEBACKS": "1"} if verbose else {}
            stack = fleet_stack(tmp_path / str(verbose), sim, "errs", nodes=2, extra_env=extra)
            with pytest.raises(auto.CommandError) as caught:
                stack.up(color="never")
            text = str(caught.value)
            for node in ("mx-01", "mx-02"):
                assert f"Vps[errs-penguinmails-fleet-{node}-" in text and "nothing was ordered" in text, text
            assert ("Traceback (most recent call last)" in text) is verbose, text
            assert sim.stats()["orders"] == 0
            stack.destroy(color="never")
            stack.workspace.remove_stack("errs")
