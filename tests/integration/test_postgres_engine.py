"""One PostgreSQL tier through the real Pulumi engine: up, no-change preview, refresh, drift, destroy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid

import psycopg
import pytest
import redis
from pulumi import automation as auto

from modules.engine import REPO_ROOT, engine_root
from modules.postgres import admin, pooler
from modules.postgres.client import connect, tenant_transaction
from modules.providers import ProviderSettings
from tests.support.engine import project_stack
from tests.support.postgres import admin_target

pytestmark = pytest.mark.engine

STACK = "pgitest"
PREFIX = "pm_pgitest"
DATABASE = f"{PREFIX}_oltp"
ROLES = [f"{PREFIX}_oltp_{kind}" for kind in ("app", "readonly", "migrator", "reputation", "warmup")]
QUEUE_USER = "pm-pgitest-queue"


def _clean_leftovers(env: dict[str, str]) -> None:
    """A run killed half-way leaves its database and roles behind; they belong to this test alone."""
    target = admin_target()
    with connect(target) as conn:
        admin.database_drop(conn, DATABASE)
    for role in ROLES:
        admin.role_drop(target, role, None)
    redis.Redis(
        host=env["PENGUINMAILS_REDIS_HOST"],
        port=int(env["PENGUINMAILS_REDIS_PORT"]),
        password=env["PENGUINMAILS_REDIS_ADMIN_PASSWORD"],
    ).execute_command("ACL", "DELUSER", QUEUE_USER)
    pooler.set_entry(pooler.pooler_target(ProviderSettings()), DATABASE, None)


def assert_no_plaintext_secrets(tmp_path, *secrets: str) -> None:
    """No secret in plain text in the state at rest (the backend's files, not an export)."""
    state_files = list((tmp_path / "state" / "backend").rglob("*.json"))
    assert state_files
    for path in state_files:
        text = path.read_text()
        for secret in secrets:
            assert secret not in text, f"plaintext secret in {path}"


def postgres_changes(stack: auto.Stack) -> list[tuple[str, str]]:
    """(operation, type::name) of every PostgreSQL resource a preview would change."""
    changes: list[tuple[str, str]] = []

    def on_event(event: auto.EngineEvent) -> None:
        pre = event.resource_pre_event
        if pre and "dynamic/postgres:" in pre.metadata.type and pre.metadata.op != auto.OpType.SAME:
            kind = pre.metadata.type.rsplit(":", 1)[-1]
            changes.append((pre.metadata.op.value, f"{kind}::{pre.metadata.urn.rsplit('::', 1)[-1]}"))

    stack.preview(color="never", on_event=on_event)
    return changes


def audit_of(stack: auto.Stack) -> tuple[int, dict]:
    """`penguinmails audit --format json` on the test's stack, as an auditor runs it (state and history only)."""
    env = {**stack.workspace.env_vars}
    env["PATH"] = f"{engine_root() / 'bin'}:{env.get('PATH', '')}"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from modules.cli.main import run; run()",
            "audit",
            "--stack",
            STACK,
            "--format",
            "json",
            "--cwd",
            stack.workspace.work_dir,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=REPO_ROOT,
    )
    assert done.returncode in (0, 4), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_oltp_tier_up_preview_refresh_drift_destroy(tmp_path, devenv_env):
    _clean_leftovers(devenv_env)
    stack = project_stack(
        tmp_path,
        STACK,
        config={
            "environment": "dev",
            "redis": {"queue_user": QUEUE_USER, "port": 6390},
            "postgres": {tier: {"enabled": False} for tier in ("content", "analytics", "queue")},
        },
    )
    target = admin_target()

    up = stack.up(color="never")
    assert up.summary.result == "succeeded"
    assert set(up.outputs) >= {"postgres_oltp_app_url"}
    assert not {"postgres_content_app_url", "postgres_queue_app_url"} & set(up.outputs)
    app_url = up.outputs["postgres_oltp_app_url"]
    assert app_url.secret is True
    password = psycopg.conninfo.conninfo_to_dict(app_url.value)["password"]
    assert "SchemaMigrations" in up.stdout or "migrations" in up.stdout

    # The app role is real, fenced by RLS, and reaches its tenant's rows only.
    tenant = uuid.uuid4()
    with psycopg.connect(app_url.value, autocommit=True) as app:
        assert app.execute("SELECT current_user").fetchone()[0] == f"{PREFIX}_oltp_app"
        with tenant_transaction(app, tenant):
            app.execute("INSERT INTO tenants (tenant_id, name) VALUES (%s, 'Engine test')", [tenant])
            app.execute("INSERT INTO leads (tenant_id, email) VALUES (%s, 'ada@example.org')", [tenant])
        with tenant_transaction(app, tenant):
            assert app.execute("SELECT count(*) FROM leads").fetchone()[0] == 1
        with app.transaction():
            assert app.execute("SELECT count(*) FROM leads").fetchone()[0] == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("TRUNCATE app.leads")

    # The same role through PgBouncer (transaction mode, TLS): the pooled URL is a secret output too.
    pooled_url = up.outputs["postgres_oltp_app_pooled_url"]
    assert pooled_url.secret is True
    pooled_info = psycopg.conninfo.conninfo_to_dict(pooled_url.value)
    assert pooled_info["port"] == devenv_env["PENGUINMAILS_PGBOUNCER_PORT"]
    assert (pooled_info["sslmode"], pooled_info["sslrootcert"]) == (
        "verify-full",
        devenv_env["PENGUINMAILS_PGBOUNCER_CA_FILE"],
    )
    with psycopg.connect(pooled_url.value, autocommit=True, prepare_threshold=None) as app:
        assert app.pgconn.ssl_in_use
        with tenant_transaction(app, tenant):
            assert app.execute("SELECT count(*) FROM leads").fetchone()[0] == 1
        with app.transaction():
            assert app.execute("SELECT count(*) FROM leads").fetchone()[0] == 0
    live = pooler.show_databases(pooler.pooler_target(ProviderSettings()))[DATABASE]
    assert (live["database"], live["pool_size"]) == (DATABASE, 80)

    assert_no_plaintext_secrets(tmp_path, password, devenv_env["PENGUINMAILS_POSTGRES_ADMIN_PASSWORD"])

    # The audit reads the RLS coverage the migrations recorded: every tenant table enabled, forced, fenced.
    code, audit = audit_of(stack)
    assert code == 0 and audit["secrets"]["findings"] == []
    rls = audit["tiers"]["oltp"]["rls"]
    assert rls["recorded"] and rls["tenant_tables"] >= 10 and rls["covered"] == rls["tenant_tables"]
    assert {"app.leads", "app.campaigns"} <= set(rls["tables"])
    assert audit["tiers"]["oltp"]["ledger_problems"] == []
    assert [entry["kind"] for entry in audit["history"]] == ["update"]

    preview = stack.preview(color="never", expect_no_changes=True)
    assert set(preview.change_summary) == {"same"}
    # Refresh reads every resource back; nothing may look changed afterwards.
    stack.refresh(color="never")
    assert postgres_changes(stack) == []
    stack.preview(color="never", expect_no_changes=True)

    # A database behind its files (here: the last ledger row removed): the preview lists the pending file.
    with connect(target, DATABASE) as conn:
        last = conn.execute(
            "DELETE FROM pm_meta.schema_migrations WHERE version = (SELECT max(version) "
            "FROM pm_meta.schema_migrations) RETURNING *"
        ).fetchone()
    stack.refresh(color="never")
    preview = stack.preview(color="never", diff=True)
    assert re.search(rf"\+ {re.escape(last[1])}\s*: \"{last[2]}\"", preview.stdout), preview.stdout
    with connect(target, DATABASE) as conn:
        conn.execute("INSERT INTO pm_meta.schema_migrations VALUES (%s, %s, %s, %s, %s, %s)", list(last))
    stack.refresh(color="never")
    assert postgres_changes(stack) == []

    # Drift made out of band: RLS no longer forced, a policy dropped, TRUNCATE granted, the password changed.
    with connect(target, DATABASE) as conn:
        conn.execute("ALTER TABLE app.leads NO FORCE ROW LEVEL SECURITY")
        conn.execute("DROP POLICY tenant_fence ON app.campaigns")
        conn.execute(f"GRANT TRUNCATE ON app.leads TO {PREFIX}_oltp_app")
        conn.execute(f"ALTER ROLE {PREFIX}_oltp_app PASSWORD 'tampered-password'")
        conn.execute(f"ALTER ROLE {PREFIX}_oltp_migrator PASSWORD 'tampered-password'")
    stack.refresh(color="never")
    with pytest.raises(auto.CommandError):
        stack.preview(color="never", expect_no_changes=True)
    preview = stack.preview(color="never", diff=True)
    assert preview.change_summary.get("update", 0) >= 2
    assert "app.leads: row level security is not forced" in preview.stdout
    assert "has TRUNCATE on app.leads" in preview.stdout
    assert password not in preview.stdout
    # The refresh recorded the gaps in the state: the audit names them and exits 4, offline.
    code, audit = audit_of(stack)
    assert code == 4
    gaps = audit["tiers"]["oltp"]["rls"]["gaps"]
    assert "app.leads: RLS not forced" in gaps and "app.campaigns: no tenant fence policy" in gaps
    assert audit["last_refresh"] is not None and audit["drift"]

    assert sorted(postgres_changes(stack)) == [
        ("update", "Role::penguinmails-postgres-oltp-app"),
        ("update", "Role::penguinmails-postgres-oltp-migrator"),
        ("update", "SchemaMigrations::penguinmails-postgres-oltp-migrations"),
    ]

    stack.up(color="never")
    with connect(target, DATABASE) as conn:
        assert conn.execute(
            "SELECT relforcerowsecurity FROM pg_class WHERE oid = 'app.leads'::regclass"
        ).fetchone()[0]
        assert (
            conn.execute(
                "SELECT count(*) FROM pg_policy "
                "WHERE polrelid = 'app.campaigns'::regclass AND polname = 'tenant_fence'"
            ).fetchone()[0]
            == 1
        )
    with psycopg.connect(app_url.value, autocommit=True) as app:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("TRUNCATE app.leads")
    stack.refresh(color="never")
    assert postgres_changes(stack) == []
    stack.preview(color="never", expect_no_changes=True)
    # Refresh rewrote the stored inputs too: the passwords must still be secrets there.
    assert_no_plaintext_secrets(tmp_path, password, devenv_env["PENGUINMAILS_POSTGRES_ADMIN_PASSWORD"])

    stack.destroy(color="never")
    with connect(target) as conn:
        assert admin.database_get(conn, DATABASE) is None
        assert [role for role in ROLES if admin.role_get(conn, role) is not None] == []
    assert DATABASE not in pooler.show_databases(pooler.pooler_target(ProviderSettings()))
    stack.workspace.remove_stack(STACK)
