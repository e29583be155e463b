"""`penguinmails preview` on a real stack through the engine: no changes exits 0; a renamed tier lists its
replaces first and exits 2; the JSON and the markdown say the same."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pulumi import automation as auto

from modules.engine import REPO_ROOT, engine_root
from modules.postgres import admin
from modules.postgres.client import connect
from modules.preview import summary as sm
from tests.support.engine import project_stack
from tests.support.postgres import admin_target

pytestmark = pytest.mark.engine

STACK = "pvtest"
KINDS = ("app", "readonly", "migrator", "reputation", "warmup")
CONFIG = {
    "environment": "dev",
    "redis": {"queue_user": "pm-pvtest-queue", "port": 6390},
    "monitoring": {"enabled": False},
    "postgres": {tier: {"enabled": False} for tier in ("content", "analytics", "queue")},
}


def _clean(prefix: str) -> None:
    target = admin_target()
    with connect(target) as conn:
        admin.database_drop(conn, f"{prefix}_oltp")
    for kind in KINDS:
        admin.role_drop(target, f"{prefix}_oltp_{kind}", None)


def summary_of(stack: auto.Stack, output_format: str) -> subprocess.CompletedProcess:
    env = {**stack.workspace.env_vars, "PATH": f"{engine_root() / 'bin'}:{stack.workspace.env_vars['PATH']}"}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from modules.cli.main import run; run()",
            "preview",
            "--stack",
            STACK,
            "--format",
            output_format,
            "--cwd",
            stack.workspace.work_dir,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=REPO_ROOT,
    )


def test_preview_summary_exit_codes_and_replaces_first(tmp_path, devenv_env):
    for prefix in ("pm_pvtest", "pm_pvtest2"):
        _clean(prefix)
    stack = project_stack(tmp_path, STACK, config=CONFIG)
    try:
        assert stack.up(color="never").summary.result == "succeeded"
        quiet = summary_of(stack, "json")
        assert quiet.returncode == sm.NO_CHANGES, quiet.stderr
        assert json.loads(quiet.stdout)["changes"] == []

        stack.set_config(
            "penguinmails:postgres",
            auto.ConfigValue(json.dumps({**CONFIG["postgres"], "oltp": {"name_prefix": "pm_pvtest2"}})),
        )
        planned = summary_of(stack, "json")
        assert planned.returncode == sm.CHANGES, planned.stderr
        data = json.loads(planned.stdout)
        replaced = {c["name"] for c in data["destructive"] if c["op"] == "replace"}
        assert {"penguinmails-postgres-oltp-database", "penguinmails-postgres-oltp-app"} <= replaced
        assert [c["op"] in sm.DESTRUCTIVE for c in data["changes"]] == sorted(
            (c["op"] in sm.DESTRUCTIVE for c in data["changes"]), reverse=True
        )
        assert data["by_tier"]["oltp"]["replace"] >= 5
        text = summary_of(stack, "markdown")
        assert text.returncode == sm.CHANGES
        assert "replace/delete:**" in text.stdout and "oltp): database" in text.stdout
        assert "[secret]" not in text.stdout
        # The preview changed nothing: the database still has its first name.
        with connect(admin_target()) as conn:
            assert admin.database_get(conn, "pm_pvtest_oltp") is not None
            assert admin.database_get(conn, "pm_pvtest2_oltp") is None
        stack.set_config("penguinmails:postgres", auto.ConfigValue(json.dumps(CONFIG["postgres"])))
    finally:
        stack.destroy(color="never")
        stack.workspace.remove_stack(STACK)
