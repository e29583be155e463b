"""Mail hosts in refresh and preview, through the real engine, on two podman mail hosts.

One lab for every case, and as few converges as the cases allow:
1. One resource per host converges both; the combined on-call inventory lists both hosts.
2. A line added by hand to ``/etc/postfix/main.cf`` on mx-1: ``preview --refresh`` (check mode) plans an
   update of mx-1's playbook and the summary's host section lists the task; the converged mx-2 shows no
   would-change task; the check runs changed nothing on either host (checksums, mtimes, daemon PIDs).
3. mx-2 stopped: ``refresh`` succeeds, records main.cf in mx-1's ``drift`` and one unreachable line for
   mx-2, and ``--expect-no-changes`` fails. Secrets (real DKIM keys, mailbox passwords) are in no drift
   line, no state file in plain text, no kept artifact.
4. A variable changed: the up fails on mx-2 alone, while mx-1's resource re-runs and repairs the file.
The move from the old fleet-wide resource is in tests/unit/ansible/test_per_host.py (delete order).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid

import pulumi
import pytest
from pulumi import automation as auto

from modules.ansible import per_host, runner
from modules.dns import dkim as dns_dkim
from modules.engine import engine_env, pulumi_command
from modules.preview import summary as sm
from tests.infra.support import DEV_GROUP_VARS, Lab, native_host_vars

# Two converges and two check rounds on two hosts: ~10 min on an idle machine, more under load.
pytestmark = [pytest.mark.engine, pytest.mark.services, pytest.mark.timeout(3000)]

ZONE = "drift.penguinmails.test"
NODES = ["mx-1", "mx-2"]
WATCHED = [
    "/etc/postfix/main.cf",
    "/etc/postfix/master.cf",
    "/etc/dovecot/dovecot.conf",
    "/etc/opendkim.conf",
    "/etc/penguinmails/mail-flavor",
]
DAEMONS = ("master", "dovecot", "opendkim", "spamd", "nginx")
HANDMADE = "handmade_setting_by_oncall = yes"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    found = Lab(tmp_path_factory.mktemp("mailhost-drift"))
    try:
        for node in NODES:
            found.create(node, f"{node}.{ZONE}")
        yield found
    finally:
        found.close()


def _secrets() -> dict:
    keys, users = [], []
    for node in NODES:
        pem, _ = dns_dkim.generate_key()
        domain = f"{node}.{ZONE}"
        keys.append({"domain": domain, "selector": "pm1", "private_key": pem})
        users.append({"address": f"postmaster@{domain}", "password": f"pw-{uuid.uuid4().hex}"})
    return {"opendkim_keys": keys, "dovecot_users": users}


def _stack(tmp_path, lab, settings: dict):
    connection = {"private_key_file": str(lab.key_file), "host_key_checking": "off"}
    hosts = [lab.hosts[n] for n in NODES]
    host_vars = {n: native_host_vars(lab.hosts[n], [f"{n}.{ZONE}"]) for n in NODES}
    group_vars = {**DEV_GROUP_VARS, "monitoring_agent_allowed_sources": ["10.88.0.1"]}

    def program():
        common = {
            "playbook": "mailhost.yml",
            "stack": settings["stack"],
            "vars": dict(settings["vars"]),
            "secret_vars": pulumi.Output.secret(settings["secrets"]),
            "group_vars": group_vars,
            "connection": connection,
            "timeout_seconds": 900,
        }
        playbooks = per_host.host_playbooks("mail", NODES, hosts, host_vars=host_vars, **common)
        for node, playbook in playbooks.items():
            pulumi.export(f"{node}_drift", playbook.drift)
            pulumi.export(f"{node}_runs", playbook.run_count)

    env = {
        **os.environ,
        **engine_env(tmp_path / "state"),
        "PULUMI_PYTHON_CMD": sys.executable,
        "PENGUINMAILS_ANSIBLE_INVENTORY_DIR": str(tmp_path / "inventory"),
    }
    workspace = auto.LocalWorkspaceOptions(
        work_dir=str(tmp_path),
        env_vars=env,
        pulumi_command=pulumi_command(),
        secrets_provider="passphrase",
        project_settings=auto.ProjectSettings(name="pm-drift-itest", runtime="python"),
    )
    return auto.create_or_select_stack(
        settings["stack"], project_name="pm-drift-itest", program=program, opts=workspace
    )


def _on_host(lab, node: str, script: str) -> str:
    done = subprocess.run(
        ["podman", "exec", lab.podman.container_name(node), "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _fingerprint(lab, node: str) -> str:
    """Checksums and mtimes of the watched files and the daemons' PIDs (a restart changes them; the podman
    hosts run no systemd): what a check run must not move."""
    files = " ".join(WATCHED)
    return _on_host(
        lab,
        node,
        f"sha256sum {files}; stat -c '%n %Y' {files}; "
        "ps -eo pid=,ppid=,comm= | awk '$2 == 1 {print $3, $1}' | sort",
    )


def _drift(stack, node: str) -> list[str]:
    """The host resource's ``drift`` output in the state (a refresh does not re-run the program's exports)."""
    for resource in stack.export_stack().deployment["resources"]:
        if (resource.get("outputs") or {}).get("inventory_host") == node:
            return list(resource["outputs"].get("drift") or [])
    raise AssertionError(f"no resource for {node}")


def _preview_json(stack) -> dict:
    """``pulumi preview --refresh --json`` of the stack, as ``penguinmails preview --refresh`` runs it."""
    result = stack.preview(color="never", refresh=True, json=True)
    return json.loads(result.stdout)


def _states(stack) -> list[dict]:
    return stack.export_stack().deployment["resources"]


def test_hand_edit_shows_in_refresh_and_preview_and_up_repairs_it_one_host_down_fails_alone(tmp_path, lab):
    secrets = _secrets()
    plain_secrets = [u["password"] for u in secrets["dovecot_users"]] + [
        line
        for k in secrets["opendkim_keys"]
        for line in k["private_key"].splitlines()
        if "-----" not in line
    ]
    settings = {
        "stack": lab.prefix,
        "mode": "per-host",
        "vars": {"postfix_warmup_stage": 3},
        "secrets": secrets,
    }
    stack = _stack(tmp_path, lab, settings)
    combined = tmp_path / "inventory" / f"generated-{lab.prefix}.yml"
    try:
        # 1. One resource per host converges both; the combined on-call inventory lists both.
        assert stack.up(color="never").summary.result == "succeeded"
        text = combined.read_text()
        assert text.startswith(runner.COMBINED_HEADER) and all(f"{n}:" in text for n in NODES)
        playbooks = [r for r in _states(stack) if r["type"] == "pulumi-python:dynamic/ansible:Playbook"]
        assert sorted(r["outputs"]["inventory_host"] for r in playbooks) == NODES

        # 2. A hand edit on mx-1. The preview refreshes (check mode on both hosts) and plans an update of
        # mx-1's playbook only; the summary's host section lists the would-change task.
        before = {n: _fingerprint(lab, n) for n in NODES}
        assert all(daemon in before["mx-1"] for daemon in DAEMONS), before["mx-1"]
        _on_host(lab, "mx-1", f"echo '{HANDMADE}' >> /etc/postfix/main.cf")
        edited = _fingerprint(lab, "mx-1")
        data = _preview_json(stack)
        summary = sm.summarize(data, stack=lab.prefix, current=_states(stack))
        rows = {row["host"]: row for row in summary["hosts"]}
        assert rows["mx-1"]["op"] == "update" and rows["mx-1"]["status"] == "drift", rows
        assert any("/etc/postfix/main.cf" in line for line in rows["mx-1"]["drift"]), rows
        # The converged host: zero would-change tasks in check mode.
        assert rows["mx-2"]["op"] == "same" and rows["mx-2"]["status"] == "converged", rows
        markdown = sm.markdown(summary)
        assert "Mail hosts:" in markdown and "/etc/postfix/main.cf" in markdown and HANDMADE not in markdown
        assert summary["exit_code"] == sm.CHANGES
        print("\n" + markdown)
        # The check runs changed nothing: the edit is still there, nothing else moved, no daemon restarted.
        assert _fingerprint(lab, "mx-1") == edited and _fingerprint(lab, "mx-2") == before["mx-2"]
        assert HANDMADE in _on_host(lab, "mx-1", "cat /etc/postfix/main.cf")

        # 3. mx-2 stopped. The refresh succeeds: mx-1's drift output names main.cf, mx-2's says it is
        # unreachable (one line); `--expect-no-changes` (make check) fails.
        subprocess.run(
            ["podman", "stop", "-t", "2", lab.podman.container_name("mx-2")], check=True, timeout=60
        )
        assert stack.refresh(color="never").summary.result == "succeeded"
        drift = _drift(stack, "mx-1")
        assert any("/etc/postfix/main.cf" in line for line in drift), drift
        down = _drift(stack, "mx-2")
        assert len(down) == 1 and down[0].startswith("unreachable: mx-2"), down
        with pytest.raises(auto.CommandError):
            stack.preview(color="never", expect_no_changes=True)
        assert _fingerprint(lab, "mx-1") == edited
        for line in drift + down:
            assert HANDMADE not in line and not any(s in line for s in plain_secrets), line
        for path in (tmp_path / "state").rglob("*.json"):
            content = path.read_text()
            assert not any(s in content for s in plain_secrets), f"plaintext secret in {path}"
        artifacts = runner.state_dir() / "artifacts" / lab.prefix
        for path in (p for p in artifacts.rglob("*") if p.is_file()):
            assert not any(s in path.read_text(errors="replace") for s in plain_secrets), path

        # 4. A variable changed with mx-2 down: the up fails on mx-2 alone; mx-1 re-runs (the variable and
        # its drift), which repairs main.cf, and its drift is empty again.
        runs = {n: stack.outputs()[f"{n}_runs"].value for n in NODES}  # from the last up; refresh kept them
        settings["vars"] = {"postfix_warmup_stage": 4}
        with pytest.raises(auto.CommandError) as caught:
            stack.up(color="never")
        message = str(caught.value)
        assert "could not reach host mx-2" in message and not any(s in message for s in plain_secrets)
        states = {
            r["outputs"].get("inventory_host"): r["outputs"] for r in _states(stack) if "-host-" in r["urn"]
        }
        assert states["mx-1"]["run_count"] == runs["mx-1"] + 1 and states["mx-1"]["drift"] == []
        assert states["mx-2"]["run_count"] == runs["mx-2"]  # its failed update kept the last good state
        assert HANDMADE not in _on_host(lab, "mx-1", "cat /etc/postfix/main.cf")
    finally:
        with contextlib.suppress(auto.CommandError):
            stack.destroy(color="never")
    assert not combined.exists()
    stack.workspace.remove_stack(settings["stack"])
