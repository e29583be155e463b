"""Fleet provisioning through the real engine against the memory simulator with a 5 s build time.

The stacks run the fleet alone (``tests/support/hostwinds_program``), so the figures are the fleet's.

For fleets of 10, 50 and 200 nodes: preview (nothing exists yet), up, no-op preview, no-op up, refresh and
destroy; the wall time of each and the API calls by action, counted from the simulator's own call log.
``PENGUINMAILS_BENCH_HOSTWINDS_SIZES=10,50`` picks other sizes.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

BUILD_SECONDS = 5.0
SIZES = (10, 50, 200)
HOSTWINDS = {"poll_interval_seconds": 1, "lost_answer_wait_seconds": 5, "build_timeout_seconds": 600}


def _phase(sim, name: str, action, results: dict[str, Any]) -> None:
    sim.clear_log()
    started = time.perf_counter()
    action()
    results[f"{name}_seconds"] = round(time.perf_counter() - started, 1)
    results[f"{name}_calls"] = dict(sorted(sim.stats()["by_action"].items()))


def measure(nodes: int, root: Path) -> dict[str, Any]:
    from tests.support.hostwinds import fleet_stack, private_simulator

    results: dict[str, Any] = {}
    with private_simulator(root / "sim", build_seconds=BUILD_SECONDS, delete_seconds=0.5) as sim:
        stack = fleet_stack(
            root,
            sim,
            f"bench{nodes}",
            nodes=nodes,
            hostwinds=HOSTWINDS,
        )
        try:
            _phase(sim, "preview", lambda: stack.preview(color="never"), results)
            _phase(sim, "up", lambda: stack.up(color="never"), results)
            assert len(sim.instances()) == nodes, "the fleet did not come up whole"
            _phase(sim, "noop_preview", lambda: stack.preview(color="never", expect_no_changes=True), results)
            _phase(sim, "noop_up", lambda: stack.up(color="never"), results)
            _phase(sim, "refresh", lambda: stack.refresh(color="never"), results)
        finally:
            _phase(sim, "destroy", lambda: stack.destroy(color="never"), results)
            stack.workspace.remove_stack(f"bench{nodes}")
    return results


def run() -> dict[str, Any]:
    chosen = os.environ.get("PENGUINMAILS_BENCH_HOSTWINDS_SIZES", "")
    sizes = [int(size) for size in chosen.split(",") if size.strip()] or SIZES
    result: dict[str, Any] = {"build_seconds": BUILD_SECONDS}
    for nodes in sizes:
        with tempfile.TemporaryDirectory(prefix=f"bench-hostwinds-{nodes}-") as tmp:
            result[f"nodes_{nodes}"] = measure(nodes, Path(tmp))
    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
