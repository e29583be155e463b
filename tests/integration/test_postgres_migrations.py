"""Migrations on a real PostgreSQL: apply, no-op re-apply, concurrency, the lock, refusals and drift."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import pytest

from modules.errors import ValidationError
from modules.postgres import admin
from modules.postgres import migrations as mig
from modules.postgres.client import PostgresUnreachable, connect
from tests.support.postgres import REPO_ROOT, TierDb, admin_target, provision, teardown

pytestmark = pytest.mark.services

FOUNDATION = (REPO_ROOT / "schemas" / "oltp" / "0001_foundation.sql").read_text()
TENANT_TABLE = """
CREATE TABLE app.notes (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    body text,
    PRIMARY KEY (tenant_id, id)
);
SELECT internal.enable_tenant_rls('app.notes');
"""


@pytest.fixture
def scratch(devenv_env):
    """An empty database owned by a fresh owner role."""
    db = TierDb("oltp", f"pmt_{secrets.token_hex(3)}", admin_target())
    with connect(db.target) as conn:
        admin.role_create(conn, {"name": db.role("migrator"), "login": False})
        admin.database_create(conn, db.database, db.role("migrator"))
    yield db
    with connect(db.target) as conn:
        admin.database_drop(conn, db.database)
    admin.role_drop(db.target, db.role("migrator"), None)


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def apply(db: TierDb, folder: Path, **kwargs) -> mig.ApplyResult:
    with db.connect() as conn:
        return mig.apply(conn, mig.load_dir(folder), owner=db.role("migrator"), actor="itest", **kwargs)


def test_apply_records_the_ledger_and_reapply_is_a_no_op(scratch, tmp_path):
    folder = write(tmp_path / "m", {"0001_foundation.sql": FOUNDATION, "0002_notes.sql": TENANT_TABLE})
    first = apply(scratch, folder)
    assert first.applied == ["0001_foundation.sql", "0002_notes.sql"]
    with scratch.connect() as conn:
        ledger = mig.read_ledger(conn)
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'notes'").fetchone()[0]
    assert [e.name for e in ledger.values()] == first.applied
    assert ledger[2].sha256 == mig.sha256_text(TENANT_TABLE)
    assert ledger[2].applied_by.endswith("via itest") and ledger[2].applied_at is not None
    assert owner == scratch.role("migrator")
    started = time.monotonic()
    second = apply(scratch, folder)
    assert second.applied == [] and second.repaired == []
    assert time.monotonic() - started < 1.0


def test_two_concurrent_applies_apply_each_file_once(scratch, tmp_path):
    slow = (
        "CREATE TABLE internal.counter (n integer);\n"
        "SELECT pg_sleep(1.5);\n"
        "INSERT INTO internal.counter VALUES (1);"
    )
    folder = write(
        tmp_path / "m",
        {
            "0001_foundation.sql": FOUNDATION,
            "0002_slow.sql": slow,
            "0003_more.sql": "INSERT INTO internal.counter VALUES (2);",
        },
    )
    results: list[mig.ApplyResult] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            results.append(apply(scratch, folder, lock_timeout=30))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.2)
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    applied = sorted(name for result in results for name in result.applied)
    assert applied == ["0001_foundation.sql", "0002_slow.sql", "0003_more.sql"]
    assert sorted(len(r.applied) for r in results) == [0, 3]  # the second waited, then found nothing to do
    with scratch.connect() as conn:
        assert conn.execute("SELECT array_agg(n ORDER BY n) FROM internal.counter").fetchone()[0] == [1, 2]


def test_lock_timeout_names_the_session_holding_the_lock(scratch, tmp_path):
    folder = write(tmp_path / "m", {"0001_foundation.sql": FOUNDATION})
    holder = connect(scratch.target, scratch.database, application_name="itest-lock-holder")
    try:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", [mig.LOCK_CLASS, mig.LOCK_OBJECT])
        pid = holder.info.backend_pid
        with pytest.raises(mig.MigrationLockTimeout) as caught:
            apply(scratch, folder, lock_timeout=0.5)
        assert f"pid {pid}" in caught.value.message and "itest-lock-holder" in caught.value.message
    finally:
        holder.close()
    with scratch.connect() as conn:
        assert mig.read_ledger(conn) == {}
    assert apply(scratch, folder).applied == ["0001_foundation.sql"]


def test_an_edited_applied_file_is_refused_and_nothing_runs(scratch, tmp_path):
    folder = write(tmp_path / "m", {"0001_foundation.sql": FOUNDATION, "0002_notes.sql": TENANT_TABLE})
    apply(scratch, folder)
    write(folder, {"0002_notes.sql": TENANT_TABLE + "\n-- an innocent edit\n", "0003_next.sql": "SELECT 1;"})
    with pytest.raises(
        mig.MigrationChecksumMismatch, match=r"0002_notes.sql: applied as 0002_notes.sql with sha256"
    ):
        apply(scratch, folder)
    (folder / "0002_notes.sql").unlink()
    with pytest.raises(
        mig.MigrationChecksumMismatch, match=r"0002_notes\.sql: applied on .* the file is gone"
    ):
        apply(scratch, folder)
    with scratch.connect() as conn:
        assert sorted(mig.read_ledger(conn)) == [1, 2]


def test_a_failing_file_is_rolled_back_whole(scratch, tmp_path):
    bad = "CREATE TABLE internal.half (n integer);\nINSERT INTO internal.half VALUES (1);\nSELECT 1 / 0;"
    folder = write(tmp_path / "m", {"0001_foundation.sql": FOUNDATION, "0002_bad.sql": bad})
    with pytest.raises(
        mig.MigrationFailed, match=r"0002_bad.sql failed and was rolled back: \[22012\] division by zero"
    ):
        apply(scratch, folder)
    with scratch.connect() as conn:
        assert sorted(mig.read_ledger(conn)) == [1]
        assert conn.execute("SELECT to_regclass('internal.half')").fetchone()[0] is None


def test_a_tenant_table_without_rls_is_refused(scratch, tmp_path):
    unfenced = (
        "CREATE TABLE app.leaky (tenant_id uuid NOT NULL, id uuid NOT NULL, PRIMARY KEY (tenant_id, id));"
    )
    no_force = TENANT_TABLE + "ALTER TABLE app.notes NO FORCE ROW LEVEL SECURITY;"
    global_key = TENANT_TABLE.replace("PRIMARY KEY (tenant_id, id)", "PRIMARY KEY (id)")
    for name, text, expected in (
        ("0002_leaky.sql", unfenced, "app.leaky: row level security is not enabled"),
        ("0002_noforce.sql", no_force, "app.notes: row level security is not forced"),
        ("0002_globalkey.sql", global_key, "app.notes: unique index notes_pkey does not include tenant_id"),
    ):
        folder = write(tmp_path / name, {"0001_foundation.sql": FOUNDATION, name: text})
        with pytest.raises(mig.MigrationFailed, match="leaves tenant tables unprotected") as caught:
            apply(scratch, folder)
        assert expected in caught.value.message
        with scratch.connect() as conn:
            assert sorted(mig.read_ledger(conn)) == [1]


def test_files_must_be_named_and_free_of_transaction_control(tmp_path):
    folder = write(tmp_path / "m", {"1_x.sql": "SELECT 1;", "0002_y.sql": "BEGIN;\nSELECT 1;\nCOMMIT;"})
    with pytest.raises(ValidationError) as caught:
        mig.load_dir(folder)
    assert "1_x.sql: the name must be NNNN_<what>.sql" in caught.value.message
    assert "0002_y.sql: remove BEGIN/COMMIT" in caught.value.message


@pytest.fixture
def oltp(devenv_env):
    db = provision("oltp")
    yield db
    teardown(db)


def test_drift_is_reported_and_repaired(oltp):
    files = mig.load_dir(REPO_ROOT / "schemas" / "oltp")
    with oltp.connect() as conn:
        assert mig.inspect(conn, files).drift == []
        conn.execute("ALTER TABLE app.leads DISABLE ROW LEVEL SECURITY")
        conn.execute("ALTER TABLE app.users NO FORCE ROW LEVEL SECURITY")
        conn.execute("DROP POLICY tenant_fence ON app.campaigns")
        conn.execute("CREATE POLICY open_door ON app.domains FOR SELECT USING (true)")
        conn.execute("ALTER POLICY tenant_access ON app.tags USING (true)")
        drift = mig.inspect(conn, files).drift
    assert "app.leads: row level security is not enabled" in drift
    assert "app.users: row level security is not forced (the owner would bypass it)" in drift
    assert "app.campaigns: policy tenant_fence is missing" in drift
    assert "app.domains: policy open_door is not from the migrations" in drift
    assert "app.tags: policy tenant_access was changed outside the migrations" in drift

    result = apply(oltp, REPO_ROOT / "schemas" / "oltp")
    assert result.applied == []
    assert len(result.repaired) == 5
    with oltp.connect() as conn:
        assert mig.inspect(conn, files).drift == []
    # Repaired for real: the app role is fenced again.
    with oltp.connect("app") as app, app.transaction():
        assert app.execute("SELECT count(*) FROM app.domains").fetchone()[0] == 0
        assert app.execute("SELECT count(*) FROM app.tags").fetchone()[0] == 0


def test_ledger_drift_against_the_files(oltp, tmp_path):
    files = mig.load_dir(REPO_ROOT / "schemas" / "oltp")
    extra = mig.MigrationFile(99, "0099_next.sql", mig.sha256_text("SELECT 1;"), "SELECT 1;")
    with oltp.connect() as conn:
        found = mig.inspect(conn, [*files, extra])
        assert found.pending == ["0099_next.sql"] and found.drift == []
        found = mig.inspect(conn, files[:-1])
        assert len(found.drift) == 1
        assert found.drift[0].startswith(f"{files[-1].name}: applied on ")
        assert found.drift[0].endswith("but the file is gone; restore it")
        conn.execute("DELETE FROM pm_meta.schema_migrations WHERE version = %s", [files[-1].version])
        assert mig.inspect(conn, files).pending == [files[-1].name]


def test_a_second_apply_on_a_real_tier_applies_and_repairs_nothing(oltp):
    files = mig.load_dir(REPO_ROOT / "schemas" / "oltp")
    with oltp.connect() as conn:
        started = time.monotonic()
        result = mig.apply(conn, files, owner=oltp.role("migrator"))
        elapsed = time.monotonic() - started
    assert result.applied == [] and result.repaired == []
    print(f"\nno-op migration check of the oltp tier: {elapsed:.2f} s")  # a figure, never asserted


def test_psycopg_error_messages_never_carry_the_password(devenv_env):
    target = admin_target().with_login("pmt_nobody", "hunter2-do-not-print")
    with pytest.raises(PostgresUnreachable) as caught:
        connect(target)
    assert caught.value.sqlstate == "28P01"
    assert "hunter2-do-not-print" not in str(caught.value)


def test_a_fence_with_a_widening_clause_is_refused(scratch, tmp_path):
    widened = TENANT_TABLE + (
        "ALTER POLICY tenant_fence ON app.notes"
        " USING (tenant_id = (SELECT app_private.current_tenant_id()) OR true);"
    )
    folder = write(tmp_path / "m", {"0001_foundation.sql": FOUNDATION, "0002_notes.sql": widened})
    with pytest.raises(mig.MigrationFailed, match="leaves tenant tables unprotected") as caught:
        apply(scratch, folder)
    assert "app.notes: no restrictive FOR ALL policy" in caught.value.message
    assert "(tenant_fence: USING OR is not allowed (it widens the fence))" in caught.value.message


DEFINER = """
CREATE FUNCTION app.count_notes() RETURNS bigint LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog AS $$ SELECT count(*) FROM app.notes $$;
"""


def test_an_unsafe_security_definer_function_fails_its_file(scratch, tmp_path):
    folder = write(
        tmp_path / "m",
        {"0001_foundation.sql": FOUNDATION, "0002_notes.sql": TENANT_TABLE, "0003_count.sql": DEFINER},
    )
    with pytest.raises(mig.MigrationFailed, match=r"0003_count\.sql was rolled back") as caught:
        apply(scratch, folder)
    assert (
        "SECURITY DEFINER function app.count_notes() pins search_path to 'pg_catalog' without pg_temp last "
        "(a caller's temporary tables would shadow its own)"
    ) in caught.value.message
    with scratch.connect() as conn:
        assert sorted(mig.read_ledger(conn)) == [1, 2]


def test_a_public_security_definer_function_fails_its_file(scratch, tmp_path):
    public = DEFINER.replace("pg_catalog AS", "pg_catalog, pg_temp AS") + (
        "GRANT EXECUTE ON FUNCTION app.count_notes() TO PUBLIC;"
    )
    folder = write(
        tmp_path / "m",
        {"0001_foundation.sql": FOUNDATION, "0002_notes.sql": TENANT_TABLE, "0003_count.sql": public},
    )
    with pytest.raises(mig.MigrationFailed, match=r"0003_count\.sql was rolled back") as caught:
        apply(scratch, folder)
    assert "SECURITY DEFINER function app.count_notes() is executable by PUBLIC" in caught.value.message
    with scratch.connect() as conn:
        assert sorted(mig.read_ledger(conn)) == [1, 2]


def test_security_drift_is_reported_and_fails_the_update(devenv_env):
    db = provision("queue")
    try:
        files = mig.load_dir(REPO_ROOT / "schemas" / "queue")
        with db.connect() as conn:
            assert mig.inspect(conn, files).drift == []
            # A helper of the policies replaced by one that admits everybody.
            conn.execute(
                "CREATE OR REPLACE FUNCTION app_private.is_owner_of(p_table regclass) RETURNS boolean "
                "LANGUAGE sql STABLE AS $$ SELECT true $$"
            )
            conn.execute("ALTER FUNCTION worker.pending(bigint, integer) RESET search_path")
            conn.execute("GRANT EXECUTE ON FUNCTION worker.complete(bigint[], integer[]) TO PUBLIC")
            conn.execute("GRANT SELECT ON app.dead_letters TO PUBLIC")
            conn.execute("ALTER TABLE app.jobs DISABLE TRIGGER jobs_notify_inserted")
            drift = mig.inspect(conn, files).drift
        fn = "function app_private.is_owner_of(regclass)"
        assert any(d.startswith(f"{fn}: its definition changed (sha256 ") for d in drift), drift
        pending = "function worker.pending(bigint,integer)"
        assert f"{pending}: search_path pin changed from 'pg_catalog, pg_temp' to not pinned" in drift
        assert (
            "function worker.complete(bigint[],integer[]): grants not from the migrations: PUBLIC:EXECUTE"
            in drift
        )
        assert "table app.dead_letters: grants not from the migrations: PUBLIC:SELECT" in drift
        assert "trigger jobs_notify_inserted on app.jobs: enabled changed from 'O' to 'D'" in drift
        with pytest.raises(mig.SchemaDriftError) as caught:
            apply(db, REPO_ROOT / "schemas" / "queue")
        assert f"{pending}: search_path pin changed" in caught.value.message
    finally:
        teardown(db)


def test_an_old_file_may_leave_an_unsafe_definer_only_if_a_later_file_fixes_it(scratch, tmp_path):
    # 0002_jobs.sql stands for the queue file applied before the rule existed: it may add one, but an
    # apply that ends with it still unsafe fails, and the fix in a later file makes the same apply pass.
    files = {"0001_foundation.sql": FOUNDATION, "0002_jobs.sql": TENANT_TABLE + DEFINER}
    with pytest.raises(mig.MigrationFailed, match="still unsafe") as caught:
        apply(scratch, write(tmp_path / "a", files))
    assert "app.count_notes()" in caught.value.message
    fix = "ALTER FUNCTION app.count_notes() SET search_path = pg_catalog, pg_temp;"
    result = apply(scratch, write(tmp_path / "b", {**files, "0003_definer_pins.sql": fix}))
    assert result.applied == ["0003_definer_pins.sql"]
