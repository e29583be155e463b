"""Fleet provisioning through the real engine against the memory simulator (5 s builds, 0.5 s deletes).

The stacks run the fleet alone (``tests/support/hostwinds_program``), so the figures are the fleet's.

For fleets of 10, 50 and 200 nodes: preview (nothing exists yet), up, no-op preview, no-op up, refresh and
destroy; the wall time of each and the API calls by action, counted from the simulator's own call log.
Side by side in one run, the same provider code under two dynamic-provider hosts: the project's own
(``modules.provider_host``, 256 workers) and the SDK's (``pulumi.dynamic``, 4 workers, the reference).
``PENGUINMAILS_BENCH_HOSTWINDS_SIZES=10,50`` picks other sizes, ``…_HOSTS=modules.provider_host`` one host.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

BUILD_SECONDS = 5.0
DELETE_SECONDS = 0.5
SIZES = (10, 50, 200)
HOSTS = ("modules.provider_host", "pulumi.dynamic")
HOSTWINDS = {"poll_interval_seconds": 1, "lost_answer_wait_seconds": 5, "build_timeout_seconds": 600}


def _phase(sim, name: str, action, results: dict[str, Any]) -> None:
    sim.clear_log()
    started = time.perf_counter()
    action()
    results[f"{name}_seconds"] = round(time.perf_counter() - started, 1)
    results[f"{name}_calls"] = dict(sorted(sim.stats()["by_action"].items()))


def measure(nodes: int, root: Path, host: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    from tests.support.hostwinds import fleet_stack, private_simulator

    results: dict[str, Any] = {}
    with private_simulator(root / "sim", build_seconds=BUILD_SECONDS, delete_seconds=DELETE_SECONDS) as sim:
        stack = fleet_stack(
            root,
            sim,
            f"bench{nodes}",
            nodes=nodes,
            hostwinds=HOSTWINDS,
            extra_env={"PENGUINMAILS_PROVIDER_HOST": host, **(env or {})},
        )
        try:
            _phase(sim, "preview", lambda: stack.preview(color="never"), results)
            _phase(sim, "up", lambda: stack.up(color="never"), results)
            assert len(sim.instances()) == nodes, "the fleet did not come up whole"
            assert sim.stats()["orders"] == nodes, "an order was placed twice"
            _phase(sim, "noop_preview", lambda: stack.preview(color="never", expect_no_changes=True), results)
            _phase(sim, "noop_up", lambda: stack.up(color="never"), results)
            _phase(sim, "refresh", lambda: stack.refresh(color="never"), results)
        finally:
            _phase(sim, "destroy", lambda: stack.destroy(color="never"), results)
            stack.workspace.remove_stack(f"bench{nodes}")
    results["up_in_build_times"] = round(results["up_seconds"] / BUILD_SECONDS, 2)
    results["destroy_in_delete_times"] = round(results["destroy_seconds"] / DELETE_SECONDS, 1)
    results["noop_preview_api_calls"] = sum(results["noop_preview_calls"].values())
    return results


def run() -> dict[str, Any]:
    chosen = os.environ.get("PENGUINMAILS_BENCH_HOSTWINDS_SIZES", "")
    sizes = [int(size) for size in chosen.split(",") if size.strip()] or SIZES
    hosts = [h for h in os.environ.get("PENGUINMAILS_BENCH_HOSTWINDS_HOSTS", "").split(",") if h] or HOSTS
    result: dict[str, Any] = {"build_seconds": BUILD_SECONDS, "delete_seconds": DELETE_SECONDS}
    for nodes in sizes:
        for host in hosts:
            with tempfile.TemporaryDirectory(prefix=f"bench-hostwinds-{nodes}-") as tmp:
                result[f"nodes_{nodes}_{host}"] = measure(nodes, Path(tmp), host)
    if max(sizes) >= 200 and "modules.provider_host" in hosts:
        # Diagnostic only (never used for real stacks: a crash would lose the state of the run): the
        # same run without the file backend's checkpoint after every step, to show what that costs.
        with tempfile.TemporaryDirectory(prefix="bench-hostwinds-nockpt-") as tmp:
            result["nodes_200_modules.provider_host_skip_checkpoints"] = measure(
                200, Path(tmp), "modules.provider_host", {"PULUMI_SKIP_CHECKPOINTS": "true"}
            )
    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
