"""`make bench`: run every ``bench/bench_*.py`` (or those named on the command line) and save the results.

Each module exposes ``run() -> dict``. Results go to ``bench/results/<name>.json`` (git-ignored) with the
machine and the date, and are printed; BENCHMARKS.md records the figures worth keeping.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> dict[str, object]:
    mem_kb = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def main(names: list[str]) -> int:
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if names:
        modules = [m for m in modules if m.removeprefix("bench_") in names or m in names]
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    failed = 0
    for name in modules:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            result = importlib.import_module(f"bench.{name}").run()
        except Exception:
            traceback.print_exc()
            failed += 1
            continue
        record = {
            "bench": name,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "seconds": round(time.perf_counter() - started, 1),
            "result": result,
        }
        (out_dir / f"{name}.json").write_text(json.dumps(record, indent=2))
        print(json.dumps(result, indent=2), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
