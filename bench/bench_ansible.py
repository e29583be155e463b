"""Mail-host convergence with the native roles on real podman hosts (preinstalled mailhost image).

Measures the first converge of one host, the idempotent re-run (changed must be 0), and the same two for
5 hosts in one run against 1 (the ratios; forks cover all five). Every host is a fresh container with its own
prefix, removed at the end; fact caches of the benchmark's stacks are cleared first so "first" is first.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from modules.ansible import runner
from modules.dns import dkim as dns_dkim

DOMAIN = "bench.penguinmails.test"


def _secret_vars(domain: str) -> dict:
    private_pem, _ = dns_dkim.generate_key()
    return {
        "opendkim_keys": [{"domain": domain, "selector": "pm1", "private_key": private_pem}],
        "dovecot_users": [{"address": f"postmaster@{domain}", "password": "bench-password-0123456789"}],
    }


def _converge(lab, names: list[str], stack: str, secret_vars: dict) -> tuple[float, runner.PlaybookRun]:
    from tests.infra.support import native_host_vars

    host_vars = {name: native_host_vars(lab.hosts[name], [DOMAIN]) for name in names}
    text = lab.inventory(names, host_vars=host_vars)
    started = time.perf_counter()
    run = runner.run_playbook("mailhost.yml", text, stack=stack, secret_vars=secret_vars)
    return round(time.perf_counter() - started, 1), run


def run() -> dict:
    from tests.infra.support import Lab

    folder = Path(tempfile.mkdtemp(prefix="bench-ansible-"))
    lab = Lab(folder)
    for stack in (f"{lab.prefix}-one", f"{lab.prefix}-five"):
        shutil.rmtree(runner.state_dir() / "facts" / stack, ignore_errors=True)
    secret_vars = _secret_vars(DOMAIN)
    try:
        lab.podman.ensure_image()
        started = time.perf_counter()
        lab.create("mx-1", f"mx-1.{DOMAIN}")
        create_one = round(time.perf_counter() - started, 1)
        first, first_run = _converge(lab, ["mx-1"], f"{lab.prefix}-one", secret_vars)
        rerun, rerun_run = _converge(lab, ["mx-1"], f"{lab.prefix}-one", secret_vars)

        names = [f"mx-{i}" for i in range(2, 7)]
        for name in names:
            lab.create(name, f"{name}.{DOMAIN}")
        five, five_run = _converge(lab, names, f"{lab.prefix}-five", secret_vars)
        five_rerun, five_rerun_run = _converge(lab, names, f"{lab.prefix}-five", secret_vars)
    finally:
        lab.close()
        shutil.rmtree(folder, ignore_errors=True)
        for stack in (f"{lab.prefix}-one", f"{lab.prefix}-five"):
            for kind in ("facts", "artifacts"):
                shutil.rmtree(runner.state_dir() / kind / stack, ignore_errors=True)
    stats = first_run.hosts["mx-1"]
    return {
        "host_create_seconds": create_one,
        "first_converge_seconds": first,
        "first_converge_changed": stats.changed,
        "tasks_per_host": stats.ok + stats.skipped,
        "idempotent_rerun_seconds": rerun,
        "idempotent_rerun_changed": rerun_run.changed,
        "parallel_5_hosts_first_converge_seconds": five,
        "parallel_5_hosts_changed_min": min(s.changed for s in five_run.hosts.values()),
        "parallel_5_vs_1_ratio": round(five / first, 2),
        "parallel_5_hosts_rerun_seconds": five_rerun,
        "parallel_5_hosts_rerun_changed": five_rerun_run.changed,
        "parallel_5_vs_1_rerun_ratio": round(five_rerun / rerun, 2),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
