"""Foundation timings: engine build (warm; cold with BENCH_COLD_ENGINE=1), stack up, no-op preview, destroy.

The stack runs through the real engine in an isolated temp copy of the project, so the dev stack's own
state is untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from modules.engine import REPO_ROOT


def _timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return round(time.perf_counter() - started, 2), value


def _engine_build() -> float:
    seconds, _ = _timed(
        lambda: subprocess.run(
            ["bash", "tools/build-engine.sh"], cwd=REPO_ROOT, check=True, capture_output=True
        )
    )
    return seconds


def run() -> dict:
    from devenv.registry import environment, services
    from tests.support.engine import project_stack

    result: dict[str, object] = {}
    if os.environ.get("BENCH_COLD_ENGINE") == "1":
        shutil.rmtree(REPO_ROOT / ".cache" / "engine", ignore_errors=True)
        result["engine_build_cold_s"] = _engine_build()
    result["engine_build_warm_s"] = _engine_build()

    for service in services(["redis"]):
        service.start()
    os.environ.update(environment())
    with tempfile.TemporaryDirectory() as tmp:
        stack = project_stack(Path(tmp), "bench", config={"redis": {"queue_user": "pm-bench-queue"}})
        result["stack_up_s"], up = _timed(lambda: stack.up(color="never"))
        result["resources_created"] = up.summary.resource_changes.get("create", 0)
        result["noop_preview_s"], _ = _timed(lambda: stack.preview(color="never", expect_no_changes=True))
        result["noop_up_s"], _ = _timed(lambda: stack.up(color="never"))
        result["refresh_s"], _ = _timed(lambda: stack.refresh(color="never"))
        result["destroy_s"], _ = _timed(lambda: stack.destroy(color="never"))
    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
