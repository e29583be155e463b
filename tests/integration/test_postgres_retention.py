"""Row retention on a real server: exactly the rows past retention go, per tier and for every tenant; the
runs are recorded; only the owner's retention run crosses tenants; the pg_cron job runs it.

Rows are seeded for two tenants on both sides of the cutoff (and, for content, bodies that expired by
their own expires_at), then ``CALL retention.run(<days>)`` runs as the migrator, as the job does. What is
left is counted as the server's admin (a superuser: no RLS), so a fence that hid rows cannot fake a pass.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from devenv.postgres import pg_cron_installed
from modules.postgres import cron
from modules.postgres.client import connect, tenant_transaction
from modules.postgres.retention import (
    JOB_NAME,
    RetentionFailed,
    RetentionScheduleArgs,
    RetentionScheduleProvider,
    retain,
)
from tests.support.postgres import TierDb, admin_target, private_cluster, provision, teardown

pytestmark = pytest.mark.services

TENANTS = (uuid.UUID(int=0xA1), uuid.UUID(int=0xB2))
NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=400)  # past every tier's retention in these tests
NEW = NOW - timedelta(days=3)  # inside it


def count(db: TierDb, table: str, where: str = "true", args: list | None = None) -> dict[uuid.UUID, int]:
    """Rows per tenant, read as the admin (superuser: RLS does not apply)."""
    with db.connect() as conn:
        rows = conn.execute(
            sql.SQL("SELECT tenant_id, count(*) FROM {} WHERE {} GROUP BY 1").format(
                sql.Identifier(*table.split(".")), sql.SQL(where)
            ),
            args or [],
        ).fetchall()
    return {tenant: 0 for tenant in TENANTS} | dict(rows)


def runs(db: TierDb) -> dict[str, tuple]:
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT table_name, deleted, batches, status, tier FROM retention.runs ORDER BY id"
        ).fetchall()
    return {row[0]: row[1:] for row in rows}


def as_owner(db: TierDb) -> psycopg.Connection:
    return db.connect(autocommit=True)


# ------------------------------------------------------------------------------------------ content


def _month(moment: datetime) -> datetime:
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def content(devenv_env) -> TierDb:
    db = provision("content")
    # A month 400 days back, so old bodies have a partition (the migration makes last month onwards).
    start = _month(OLD)
    end = _month(start + timedelta(days=32))
    with db.connect("migrator") as conn:
        for parent in ("content_objects", "attachments"):
            name = f"{parent}_{start:%Y_%m}"
            conn.execute(
                sql.SQL("CREATE TABLE partitions.{} PARTITION OF app.{} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(name), sql.Identifier(parent), sql.Literal(start), sql.Literal(end)
                )
            )
            conn.execute("SELECT internal.enable_tenant_rls(%s::regclass)", [f"partitions.{name}"])
    with db.connect("app") as conn:
        for tenant in TENANTS:
            with tenant_transaction(conn, tenant):
                for key, created, expires in (
                    ("old-1", OLD, None),
                    ("old-2", OLD + timedelta(hours=1), None),
                    ("new", NEW, None),
                    ("expired", NEW, NOW - timedelta(hours=1)),  # past its own retention hint
                    ("expiring", NEW, NOW + timedelta(days=30)),
                ):
                    conn.execute(
                        "INSERT INTO app.content_objects (tenant_id, storage_key, created_at, content_text, "
                        "expires_at) VALUES (%s, %s, %s, 'body', %s)",
                        [tenant, key, created, expires],
                    )
                for key, created in (("old-1", OLD), ("new", NEW), ("expired", NEW)):
                    conn.execute(
                        "INSERT INTO app.attachments (tenant_id, storage_key, content_created_at, filename, "
                        "size_bytes, content) VALUES (%s, %s, %s, 'a.txt', 1, 'x')",
                        [tenant, key, created],
                    )
    yield db
    teardown(db)


def test_content_retention_deletes_old_and_expired_bodies_of_every_tenant_and_nothing_else(content):
    with as_owner(content) as conn:
        recorded = retain(conn, content.role("migrator"), days=180, batch=1)
    for tenant in TENANTS:
        with content.connect() as admin:
            keys = {
                row[0]
                for row in admin.execute(
                    "SELECT storage_key FROM app.content_objects WHERE tenant_id = %s", [tenant]
                )
            }
            attached = {
                row[0]
                for row in admin.execute(
                    "SELECT storage_key FROM app.attachments WHERE tenant_id = %s", [tenant]
                )
            }
        assert keys == {"new", "expiring"}, tenant
        assert attached == {"new"}, tenant  # old-1's by retention, expired's with its body (cascade)
    by_table = {r.table: r for r in recorded}
    # Two tenants: attachments 1 old each; bodies 2 old + 1 expired each. batch=1: one batch per row + the
    # empty one that ends the loop.
    assert (by_table["app.attachments"].deleted, by_table["app.attachments"].batches) == (2, 3)
    assert (by_table["app.content_objects"].deleted, by_table["app.content_objects"].batches) == (6, 7)
    assert {r.status for r in recorded} == {"succeeded"}
    assert runs(content)["app.content_objects"] == (6, 7, "succeeded", "content")
    # Idempotent: a second run finds nothing and records zeros.
    with as_owner(content) as conn:
        again = retain(conn, content.role("migrator"), days=180)
    assert [(r.table, r.deleted) for r in again] == [("app.attachments", 0), ("app.content_objects", 0)]


# ------------------------------------------------------------------------------------------ queue


@pytest.fixture(scope="module")
def queue(devenv_env) -> TierDb:
    db = provision("queue")
    with db.connect("migrator") as conn:  # the queue's app role writes no table; its owner may
        for n, tenant in enumerate(TENANTS):
            with tenant_transaction(conn, tenant):
                for when in (OLD, OLD, NEW):
                    conn.execute(
                        "INSERT INTO app.job_failures (tenant_id, job_id, queue_name, attempt, outcome, error, "
                        "failed_at) VALUES (%s, %s, 'itest', 1, 'retry', 'boom', %s)",
                        [tenant, n, when],
                    )
                for i, when in enumerate((OLD, NEW)):
                    conn.execute(
                        "INSERT INTO app.dead_letters (tenant_id, id, queue_name, priority, payload, attempts, "
                        "max_attempts, enqueued_at, died_at) VALUES (%s, %s, 'itest', 100, '{}', 3, 3, %s, %s)",
                        [tenant, 10 * n + i, when, when],
                    )
    yield db
    teardown(db)


def test_queue_retention_deletes_old_failure_logs_and_dead_letters_only(queue):
    with as_owner(queue) as conn:
        recorded = retain(conn, queue.role("migrator"), days=30)
    cutoff = NOW - timedelta(days=30)
    assert count(queue, "app.job_failures") == dict.fromkeys(TENANTS, 1)
    assert count(queue, "app.job_failures", "failed_at < %s", [cutoff]) == dict.fromkeys(TENANTS, 0)
    assert count(queue, "app.dead_letters") == dict.fromkeys(TENANTS, 1)
    assert count(queue, "app.dead_letters", "died_at < %s", [cutoff]) == dict.fromkeys(TENANTS, 0)
    assert {r.table: r.deleted for r in recorded} == {"app.job_failures": 4, "app.dead_letters": 2}
    assert runs(queue)["app.dead_letters"][:1] == (2,)


# ------------------------------------------------------------------------------------------ analytics


@pytest.fixture(scope="module")
def analytics(devenv_env) -> TierDb:
    db = provision("analytics")
    with db.connect("app") as conn:
        for tenant in TENANTS:
            with tenant_transaction(conn, tenant):
                for day in (OLD.date(), (OLD + timedelta(days=1)).date(), NEW.date()):
                    conn.execute(
                        "INSERT INTO app.campaign_analytics (tenant_id, campaign_id, period_start, sent) "
                        "VALUES (%s, %s, %s, 5)",
                        [tenant, uuid.uuid4(), day],
                    )
                    conn.execute(
                        "INSERT INTO app.mailbox_analytics (tenant_id, mailbox_id, period_start, sent) "
                        "VALUES (%s, %s, %s, 5)",
                        [tenant, uuid.uuid4(), day],
                    )
                # Billing periods are kept (payments: 7 years), however old.
                conn.execute(
                    "INSERT INTO app.billing_analytics (tenant_id, period_start, period_end) VALUES (%s, %s, %s)",
                    [tenant, OLD.date(), (OLD + timedelta(days=30)).date()],
                )
    yield db
    teardown(db)


def test_analytics_retention_deletes_old_daily_rollups_and_keeps_billing(analytics):
    with as_owner(analytics) as conn:
        recorded = retain(conn, analytics.role("migrator"), days=365)
    assert count(analytics, "app.campaign_analytics") == dict.fromkeys(TENANTS, 1)
    assert count(analytics, "app.mailbox_analytics") == dict.fromkeys(TENANTS, 1)
    assert count(analytics, "app.campaign_analytics", "period_start = %s", [NEW.date()]) == dict.fromkeys(
        TENANTS, 1
    )
    assert count(analytics, "app.billing_analytics") == dict.fromkeys(TENANTS, 1)
    deleted = {r.table: r.deleted for r in recorded}
    assert deleted["app.campaign_analytics"] == 4 and deleted["app.mailbox_analytics"] == 4
    assert deleted["app.lead_analytics"] == 0
    assert "app.billing_analytics" not in deleted


# ------------------------------------------------------------------------------------------ metrics


def test_the_exporter_shows_the_deleted_counts_as_the_readonly_role(content, queue):
    """After the runs above: the counts and last-run times per tier, read through the readonly logins."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from modules.monitoring.exporter import Exporter, ExporterConfig
    from modules.postgres.client import connection_url

    def readonly_url(db: TierDb) -> str:
        return connection_url(
            db.role("readonly"),
            db.passwords["readonly"],
            db.target.host,
            db.target.port,
            db.database,
            "disable",
        )

    config = ExporterConfig(
        stack="itest", retention_urls={"content": readonly_url(content), "queue": readonly_url(queue)}
    )
    # Not started: the registry is scraped in-process (the listen address is never bound).
    text = generate_latest(Exporter(config, listen="127.0.0.1:9").registry).decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    deleted = "penguinmails_retention_deleted_rows_total"
    assert samples[(deleted, (("table", "app.content_objects"), ("tier", "content")))] == 6
    assert samples[(deleted, (("table", "app.attachments"), ("tier", "content")))] == 2
    assert samples[(deleted, (("table", "app.dead_letters"), ("tier", "queue")))] >= 2
    for tier in ("content", "queue"):
        stamp = samples[("penguinmails_retention_last_run_timestamp_seconds", (("tier", tier),))]
        assert abs(stamp - time.time()) < 600, tier
        assert samples[("penguinmails_source_up", (("source", f"postgres_{tier}_retention"),))] == 1
    failed = samples[
        ("penguinmails_retention_last_run_failed", (("table", "app.job_failures"), ("tier", "queue")))
    ]
    assert failed == 0


# ------------------------------------------------------------------------------------------ attacks


def _error(conn: psycopg.Connection, statement: str, args: list | None = None) -> str:
    with pytest.raises(psycopg.Error) as failed:
        with conn.transaction():
            conn.execute(statement, args or [])
    return failed.value.sqlstate


def test_the_app_role_can_neither_run_retention_nor_read_its_record(content):
    with content.connect("app") as conn:
        assert _error(conn, "CALL retention.run(1)") == "42501"
        assert (
            _error(
                conn,
                "SELECT retention.purge_batch('app.content_objects', now() - interval '2 days', now(), 10)",
            )
            == "42501"
        )
        assert _error(conn, "SELECT count(*) FROM retention.runs") == "42501"
        assert _error(conn, "SELECT count(*) FROM internal.retention_policies") == "42501"
    with content.connect("readonly") as conn:
        assert _error(conn, "CALL retention.run(1)") == "42501"
        assert conn.execute("SELECT count(*) FROM retention.runs").fetchone()[0] >= 0  # the exporter's read


def test_a_tenant_role_cannot_enter_a_retention_run(content):
    """It cannot mark its transaction, and a transaction marked for it (by the admin, as purge_batch marks its
    own) still leaves its fence the tenant's: it is not the owner, nor can it become the owner."""
    a, b = TENANTS
    before = count(content, "app.content_objects")
    with content.connect("app") as conn:
        assert _error(conn, "INSERT INTO internal.retention_active VALUES (pg_current_xact_id())") == "42501"
        assert _error(conn, f'SET ROLE "{content.role("migrator")}"') == "42501"  # no member of the owner
    with content.connect() as admin, admin.transaction(force_rollback=True):
        admin.execute("INSERT INTO internal.retention_active VALUES (pg_current_xact_id())")
        admin.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(content.role("app"))))
        assert (
            admin.execute("SELECT app_private.in_retention_run('app.content_objects')").fetchone()[0] is False
        )
        assert admin.execute("SELECT count(*) FROM app.content_objects").fetchone()[0] == 0
        admin.execute("SELECT set_config('app.tenant_id', %s, true)", [str(a)])
        seen = {r[0] for r in admin.execute("SELECT DISTINCT tenant_id FROM app.content_objects")}
        assert seen == {a}
        assert admin.execute("DELETE FROM app.content_objects WHERE tenant_id = %s", [b]).rowcount == 0
    assert count(content, "app.content_objects") == before


def test_another_definer_function_of_the_owner_is_still_fenced(content):
    """A SECURITY DEFINER function of the owner runs as the owner, but not in a retention run: called by the
    app it sees the tenant's rows only. (Standing in for any such function a later migration might add.)"""
    a, _ = TENANTS
    with content.connect("migrator") as conn:
        conn.execute(
            "CREATE FUNCTION app.itest_count_bodies() RETURNS bigint LANGUAGE sql SECURITY DEFINER "
            "SET search_path = pg_catalog, pg_temp AS 'SELECT count(*) FROM app.content_objects'"
        )
        conn.execute(
            sql.SQL("GRANT EXECUTE ON FUNCTION app.itest_count_bodies() TO {}").format(
                sql.Identifier(content.role("app"))
            )
        )
    try:
        with content.connect("app") as conn:
            with conn.transaction():
                assert conn.execute("SELECT app.itest_count_bodies()").fetchone()[0] == 0
            with tenant_transaction(conn, a):
                mine = conn.execute("SELECT count(*) FROM app.content_objects").fetchone()[0]
                assert conn.execute("SELECT app.itest_count_bodies()").fetchone()[0] == mine
    finally:
        with content.connect("migrator") as conn:
            conn.execute("DROP FUNCTION app.itest_count_bodies()")


def test_outside_the_run_the_owner_is_fenced_and_the_run_refuses_bad_input(content):
    with content.connect("migrator") as conn:
        assert conn.execute("SELECT count(*) FROM app.content_objects").fetchone()[0] == 0  # no tenant set
        for statement, args in (
            # A future or too recent cutoff, a swapped pair, an unregistered table, a silly batch.
            ("SELECT retention.purge_batch('app.content_objects', now(), now(), 10)", []),
            ("SELECT retention.purge_batch('app.content_objects', now() + interval '9 days', now(), 10)", []),
            (
                "SELECT retention.purge_batch('internal.retention_policies', now() - interval '9 days', now(), 10)",
                [],
            ),
            ("SELECT retention.purge_batch('app.content_objects', now() - interval '9 days', now(), 0)", []),
            ("CALL retention.run(0)", []),
        ):
            assert _error(conn, statement, args) == "22023", statement
        assert (
            conn.execute("SELECT app_private.in_retention_run('app.content_objects')").fetchone()[0] is False
        )


def test_a_failing_table_is_recorded_and_the_others_still_run(queue):
    """A policy whose condition breaks at run time fails its table only; the call fails at the end."""
    with queue.connect("migrator") as conn:
        conn.execute(
            "INSERT INTO internal.retention_policies (relation, tier, condition, position) "
            "VALUES ('app.scheduled_jobs', 'queue', '(1 / 0) = 1', 1)"
        )
    try:
        with as_owner(queue) as conn:
            with pytest.raises(RetentionFailed, match=r"app\.scheduled_jobs") as failed:
                retain(conn, queue.role("migrator"), days=30)
        statuses = {r.table: r.status for r in failed.value.runs}
        assert statuses == {
            "app.scheduled_jobs": "failed",
            "app.job_failures": "succeeded",
            "app.dead_letters": "succeeded",
        }
        assert "division by zero" in next(r.detail for r in failed.value.runs if r.status == "failed")
    finally:
        with queue.connect("migrator") as conn:
            conn.execute(
                "DELETE FROM internal.retention_policies WHERE relation = 'app.scheduled_jobs'::regclass"
            )


# ------------------------------------------------------------------------------------------ pg_cron


@pytest.fixture(scope="module")
def cron_server(devenv_env):
    """The devenv server when it preloads pg_cron; else a private cluster with the devenv's settings."""
    with connect(admin_target("queue")) as conn:
        if cron.cron_database(conn) is not None:
            yield None
            return
    if not pg_cron_installed():
        pytest.fail("pg_cron is not installed (postgresql-15-cron; tools/bootstrap.sh installs it)")
    with private_cluster("itest-retention-cron-", port=5496) as service:
        yield service


def test_the_pg_cron_job_runs_retention_as_the_migrator(cron_server):
    db = provision("queue")
    with db.connect("migrator") as conn, tenant_transaction(conn, TENANTS[0]):
        conn.execute(
            "INSERT INTO app.job_failures (tenant_id, job_id, queue_name, attempt, outcome, failed_at) "
            "VALUES (%s, 1, 'itest', 1, 'retry', %s), (%s, 2, 'itest', 1, 'retry', %s)",
            [TENANTS[0], OLD, TENANTS[0], NEW],
        )
    provider = RetentionScheduleProvider()
    args = RetentionScheduleArgs(
        tier="queue", database=db.database, username=db.role("migrator"), days=30, schedule="* * * * *"
    )
    props = {**args.props(), "jobid": None, "cron_database": None}
    assert provider.check({}, props).failures == []
    created = None
    try:
        created = provider.create(props)
        jobid = int(created.id)
        cron_db = created.outs["cron_database"]
        with connect(db.target, cron_db) as conn:
            job = cron.job_by_id(conn, jobid)
            assert (job["jobname"], job["database"], job["username"], job["command"]) == (
                JOB_NAME,
                db.database,
                db.role("migrator"),
                "CALL retention.run(30, 5000)",
            )
            deadline, found = time.monotonic() + 100, []
            while time.monotonic() < deadline:
                found = cron.job_runs(conn, jobid)
                if any(r["status"] in ("succeeded", "failed") for r in found):
                    break
                time.sleep(2)
            finished = [r for r in found if r["status"] in ("succeeded", "failed")]
            assert finished, f"the job did not run within 100 s: {found}"
            assert finished[0]["status"] == "succeeded", finished[0]["return_message"]
        assert runs(db)["app.job_failures"] == (1, 1, "succeeded", "queue")
        assert count(db, "app.job_failures") == {TENANTS[0]: 1, TENANTS[1]: 0}
        assert provider.read(created.id, created.outs).outs["drift"] == []
        with connect(db.target, cron_db) as conn:
            conn.execute("SELECT cron.alter_job(%s, command => 'CALL retention.run(1, 5000)')", [jobid])
        drift = provider.read(created.id, created.outs).outs["drift"]
        assert drift == [
            f"pg_cron job {JOB_NAME}: command is 'CALL retention.run(1, 5000)', not 'CALL retention.run(30, 5000)'"
        ]
        updated = provider.update(created.id, created.outs, props)
        assert updated.outs["jobid"] == jobid
        assert provider.read(created.id, updated.outs).outs["drift"] == []
    finally:
        if created is not None:
            provider.delete(created.id, created.outs)
            with connect(db.target, created.outs["cron_database"]) as conn:
                assert cron.job_get(conn, JOB_NAME, db.role("migrator")) is None
        teardown(db)


def test_a_server_without_pg_cron_names_the_retention_alternative(devenv_env, monkeypatch):
    provider = RetentionScheduleProvider()
    monkeypatch.setattr(RetentionScheduleProvider, "_cron_database", lambda self, target, props: None)
    args = RetentionScheduleArgs(tier="queue", database="pm_x_queue", username="pm_x_queue_migrator", days=30)
    with pytest.raises(Exception, match=r"postgres\.queue\.retention_schedule.*modules\.postgres\.retention"):
        provider.create({**args.props(), "jobid": None, "cron_database": None})
