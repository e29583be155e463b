"""The policy pack in policies/ through the real engine (`pulumi preview --policy-pack policies`).

One program (tests/support/policy_program.py, the real resource types and inputs) breaks every mandatory
rule at once; the same program in its clean variant breaks none and keeps one advisory. Only previews run:
nothing is created. The pack starts through tools/policy-host (README "Policy pack").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modules.engine import REPO_ROOT, engine_env
from modules.policy import rules
from modules.preview import policy as pol
from modules.preview import summary as sm

pytestmark = pytest.mark.engine

PACK = ("--policy-pack", str(REPO_ROOT / "policies"))
CLI = (sys.executable, "-c", "from modules.cli.main import run; run()")
MANDATORY = sorted(name for name, (level, _) in rules.RULES.items() if level == rules.MANDATORY)
VIOLATING = {
    "variant": "violating",
    "penguinmails:environment": "production",
    "penguinmails:hostwindsApiKey": "plain-api-key-in-config",
    "penguinmails:fleet": json.dumps(
        {"nodes": 2, "max_nodes": 1, "max_monthly_cost": 10, "plan_prices": {"1": 9.5}}
    ),
    "penguinmails:postgres": json.dumps({"oltp": {"sslmode": "require"}}),
    "penguinmails:warmup": json.dumps({"enabled": False}),
    # The summary prices the fleet's plans: from the devenv's Hostwinds simulator, never the real API.
    "penguinmails:hostwinds": json.dumps({"endpoint": "http://127.0.0.1:8930/cloud/api.php"}),
}


def _project(tmp_path: Path, name: str, config: dict[str, str], secrets: dict[str, str]) -> tuple[Path, dict]:
    project = tmp_path / name
    project.mkdir()
    shutil.copy(REPO_ROOT / "tests" / "support" / "policy_program.py", project / "__main__.py")
    (project / "policies").symlink_to(REPO_ROOT / "policies")  # what `penguinmails preview` runs by default
    (project / "Pulumi.yaml").write_text(
        f"name: policytest\nruntime:\n  name: python\n  options:\n    virtualenv: {REPO_ROOT / '.venv'}\n"
    )
    env = pol.engine_env({**os.environ, **engine_env(tmp_path / f"state-{name}")})
    run = lambda *args: subprocess.run(  # noqa: E731
        ["pulumi", *args, "--stack", name, "--non-interactive"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run("stack", "init").returncode == 0
    done = run("config", "set-all", *(f"--plaintext={k}={v}" for k, v in config.items()))
    assert done.returncode == 0, done.stderr
    for key, value in secrets.items():  # on stdin: a secret never goes on a command line
        done = subprocess.run(
            ["pulumi", "config", "set", "--secret", key, "--stack", name, "--non-interactive"],
            input=value,
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    return project, env


def _preview(project: Path, env: dict, name: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["pulumi", "preview", "--stack", name, "--non-interactive", "--color", "never", *PACK],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _summary(project: Path, env: dict, name: str, *extra: str) -> subprocess.CompletedProcess:
    """`penguinmails preview`: it runs the project's policies/ unless told --no-policies."""
    return subprocess.run(
        [*CLI, "preview", "--stack", name, "--cwd", str(project), *extra],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_pack_blocks_each_mandatory_rule_and_the_summary_exits_3(tmp_path, devenv_env):
    project, env = _project(tmp_path, "violating", VIOLATING, {})
    done = _preview(project, env, "violating")
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    for name in MANDATORY:
        assert f"[mandatory]  {name} " in out, f"{name} not reported:\n{out}"
    assert "[advisory]  warmup-disabled" in out and "[advisory]  dmarc-policy-none" in out
    # The violation names the resource and the fix, never a secret's value.
    assert "fleet node fleet-mx-02 has no rDNS" in out
    assert "the fleet has 2 nodes, above fleet.max_nodes 1" in out
    assert "the fleet costs 19.00 a month, above fleet.max_monthly_cost 10.00" in out
    assert "plain-api-key-in-config" not in out and "policy-test-password" not in out

    summary = _summary(project, env, "violating", "--format", "json")
    assert summary.returncode == sm.POLICY_VIOLATION, summary.stderr
    data = json.loads(summary.stdout)
    assert data["exit_code"] == sm.POLICY_VIOLATION
    found = {(v["policy"], v["level"], v["resource"]) for v in data["policy"]}
    assert {p for p, level, _ in found if level == "mandatory"} == set(MANDATORY)
    assert ("fleet-node-rdns", "mandatory", "fleet-mx-01") in found
    assert ("mta-sts-certificate", "mandatory", "mail-playbook") in found
    assert ("dmarc-policy-none", "advisory", "dkim-gx1-globex.test") in found
    assert [v["level"] for v in data["policy"]] == sorted(
        (v["level"] for v in data["policy"]), key=pol.LEVELS.index
    )
    assert not any(pol.HOST_PLUGIN in d for d in data["diagnostics"])
    text = sm.markdown(data)  # what `--format markdown` prints for the same summary
    tally = pol.counts(data["policy"])
    assert tally == {"mandatory": len(data["policy"]) - 2, "advisory": 2}
    assert f"**Policy: {tally['mandatory']} mandatory violation(s), 2 advisory warning(s)**" in text
    assert (
        "| mandatory | production-tier-tls | oltp-database | production tier oltp: sslmode is require" in text
    )
    assert "plain-api-key-in-config" not in summary.stdout + text
    # Without the pack the same preview only has changes.
    unchecked = _summary(project, env, "violating", "--format", "json", "--no-policies")
    assert unchecked.returncode == sm.CHANGES, unchecked.stderr
    assert json.loads(unchecked.stdout)["policy"] == []


def test_a_clean_program_passes_and_advisories_only_warn(tmp_path, devenv_env):
    config = {**VIOLATING, "variant": "clean"}
    config.pop("penguinmails:hostwindsApiKey")
    config["penguinmails:fleet"] = json.dumps(
        {"nodes": 1, "max_nodes": 1, "max_monthly_cost": 10, "plan_prices": {"1": 9.5}}
    )
    config["penguinmails:postgres"] = json.dumps({"oltp": {"sslmode": "verify-full"}})
    config["penguinmails:warmup"] = json.dumps({"enabled": True})
    project, env = _project(tmp_path, "clean", config, {"penguinmails:hostwindsApiKey": "secret-api-key"})
    done = _preview(project, env, "clean")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "[mandatory]" not in out
    assert "[advisory]  dmarc-policy-none" in out and "globex.test: DMARC policy is p=none" in out

    # The pack's own config is checked by the engine before anything runs, naming the field.
    bad = tmp_path / "policy-config.json"
    bad.write_text(json.dumps({"dkim-key-age": {"max_days": "many"}}))
    refused = subprocess.run(
        [
            "pulumi",
            "preview",
            "--stack",
            "clean",
            "--non-interactive",
            *PACK,
            "--policy-pack-config",
            str(bad),
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0
    assert "dkim-key-age: max_days: Invalid type. Expected: number" in refused.stdout + refused.stderr

    summary = _summary(project, env, "clean", "--format", "json")
    assert summary.returncode == sm.CHANGES, summary.stderr
    data = json.loads(summary.stdout)
    assert [(v["policy"], v["level"]) for v in data["policy"]] == [("dmarc-policy-none", "advisory")]


def test_the_real_program_is_judged_on_its_real_resources(tmp_path, devenv_env):
    """The stack program itself (stacks/), previewed only: fleet nodes without rDNS, above their budget."""
    from tests.support.engine import project_stack

    config = {
        "environment": "dev",
        "monitoring": {"enabled": False},
        "postgres": {tier: {"enabled": False} for tier in ("oltp", "content", "analytics", "queue")},
        "hostwinds": {"endpoint": "http://127.0.0.1:8930/cloud/api.php"},
        "fleet": {"nodes": 2, "max_nodes": 1, "ssh_key_names": ["penguinmails-dev-operator"]},
    }
    stack = project_stack(tmp_path, "policyreal", config=config)
    try:
        env = pol.engine_env(stack.workspace.env_vars)
        done = subprocess.run(
            ["pulumi", "preview", "--stack", "policyreal", "--non-interactive", "--color", "never", *PACK],
            cwd=stack.workspace.work_dir,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        out = done.stdout + done.stderr
        assert done.returncode != 0, out
        assert (
            "[mandatory]  fleet-node-rdns  (pulumi-python:dynamic/hostwinds:Vps: penguinmails-fleet-mx-01)"
            in out
        )
        assert "the fleet has 2 nodes, above fleet.max_nodes 1" in out
    finally:
        stack.workspace.remove_stack("policyreal")
