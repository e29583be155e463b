"""Partition maintenance on a real server: months and days ahead, retention, UTC boundaries, the pg_cron job.

The clock is moved by calling the very command the schedule runs with its ``p_now`` argument
(``internal.maintain_partitions(p_now)``; the job calls it with the default, ``now()``). The pg_cron test
schedules the job every minute through the resource's provider and waits (once, up to ~90 s) for a run
that succeeded; it uses the devenv server when that preloads pg_cron, else a private cluster of its own.
"""

from __future__ import annotations

import itertools
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from devenv.postgres import pg_cron_installed
from modules.postgres import cron
from modules.postgres import migrations as mig
from modules.postgres.client import connect, tenant_transaction
from modules.postgres.maintenance import maintain
from modules.postgres.schedule import JOB_NAME, MaintenanceScheduleArgs, MaintenanceScheduleProvider
from tests.support.postgres import REPO_ROOT, TierDb, admin_target, private_cluster, provision, teardown

pytestmark = pytest.mark.services

TENANT = uuid.UUID(int=0xD0)
SHARED = REPO_ROOT / "schemas" / "shared" / "partition_maintenance.sql"
QUEUE_POLICY = REPO_ROOT / "schemas" / "queue" / "0006_finished_jobs_partition_policy.sql"


def month_start(moment: datetime, months: int = 0) -> datetime:
    index = moment.year * 12 + moment.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def ranges(conn: psycopg.Connection, parent: str) -> dict[str, tuple[datetime, datetime]]:
    rows = conn.execute(
        "SELECT partition_name, range_from, range_to FROM internal.partition_ranges(%s::regclass)", [parent]
    ).fetchall()
    return {name: (lo.astimezone(UTC), hi.astimezone(UTC)) for name, lo, hi in rows}


def run_maintenance(db: TierDb, now: datetime | None = None, timezone: str = "UTC") -> list[tuple]:
    """The scheduled command, as the migrator (the job's role), with the clock at ``now``."""
    with db.connect("migrator") as conn:
        conn.execute("SELECT set_config('TimeZone', %s, false)", [timezone])
        return conn.execute(
            "SELECT action, partition_name, range_from, range_to, detail "
            "FROM internal.maintain_partitions(coalesce(%s::timestamptz, now()))",
            [now],
        ).fetchall()


@pytest.fixture(scope="module")
def content(devenv_env) -> TierDb:
    db = provision("content")
    yield db
    teardown(db)


def test_the_migration_leaves_this_month_and_three_ahead(content):
    now = datetime.now(UTC)
    with content.connect() as admin:
        for parent in ("app.content_objects", "app.attachments"):
            found = ranges(admin, parent)
            for ahead in range(4):
                start = month_start(now, ahead)
                name = f"{parent.split('.')[1]}_{start:%Y_%m}"
                assert found[name] == (start, month_start(now, ahead + 1)), name
    assert run_maintenance(content) == []  # the migration ran it already: nothing left to do


def test_seven_months_on_the_months_ahead_exist_and_take_rows(content):
    now = datetime.now(UTC)
    later = month_start(now, 7) + timedelta(days=9, hours=5)
    done = run_maintenance(content, later)
    created = sorted(row[1] for row in done if row[0] == "created")
    expected = sorted(
        f"partitions.{table}_{month_start(later, ahead):%Y_%m}"
        for table in ("content_objects", "attachments")
        for ahead in range(4)
    )
    assert created == expected and all(row[0] == "created" for row in done)
    assert run_maintenance(content, later) == []  # idempotent
    with content.connect("app") as app, tenant_transaction(app, TENANT):
        for ahead in range(4):
            at = month_start(later, ahead) + timedelta(days=3)
            key = f"future/{at:%Y-%m}"
            app.execute(
                "INSERT INTO app.content_objects (tenant_id, storage_key, created_at, content_text) "
                "VALUES (%s, %s, %s, 'later')",
                [TENANT, key, at],
            )
            app.execute(
                "INSERT INTO app.attachments (tenant_id, storage_key, content_created_at, filename, size_bytes, "
                "content) VALUES (%s, %s, %s, 'a.txt', 1, 'x')",
                [TENANT, key, at],
            )
            home = app.execute(
                "SELECT tableoid::regclass::text FROM app.content_objects WHERE storage_key = %s", [key]
            ).fetchone()[0]
            assert home == f"partitions.content_objects_{at:%Y_%m}"
        with pytest.raises(psycopg.errors.InsufficientPrivilege), app.transaction():
            app.execute(
                sql.SQL("SELECT count(*) FROM {}").format(
                    sql.Identifier("partitions", f"content_objects_{later:%Y_%m}")
                )
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege), app.transaction():
            app.execute("SELECT * FROM internal.maintain_partitions()")
    with content.connect() as admin:
        assert mig.tenant_table_problems(admin) == []  # every new partition carries the fence
        assert mig.inspect(admin, mig.load_dir(REPO_ROOT / "schemas" / "content")).drift == []


def test_retention_drops_months_wholly_older_than_seven_years_and_nothing_else(content):
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(days=7 * 366 + 40)
    cutoff = min(later.replace(year=later.year - 7), month_start(later))
    with content.connect() as admin:
        before = {p: ranges(admin, p) for p in ("app.attachments", "app.content_objects")}
    doomed = [
        f"partitions.{name}"
        for parent in ("app.attachments", "app.content_objects")  # attachments first: they reference bodies
        for name, (_lo, hi) in sorted(before[parent].items(), key=lambda item: item[1])
        if hi <= cutoff
    ]
    assert doomed  # at least the month before the tier was made
    done = run_maintenance(content, later)
    assert [row[1] for row in done if row[0] == "dropped"] == doomed
    assert not [row for row in done if row[0] == "failed"]
    assert run_maintenance(content, later) == []
    with content.connect() as admin:
        for parent in ("app.attachments", "app.content_objects"):
            kept = ranges(admin, parent)
            assert all(hi > cutoff for _lo, hi in kept.values())
            assert {n for n, (_lo, hi) in before[parent].items() if hi > cutoff} <= set(kept)
            assert not admin.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'partitions' AND c.relname = ANY (%s)",
                [[name.split(".")[1] for name in doomed]],
            ).fetchone()[0]  # detached and dropped, not left behind
        assert mig.inspect(admin, mig.load_dir(REPO_ROOT / "schemas" / "content")).drift == []


def test_boundaries_are_utc_midnight_whatever_the_session_time_zone(content):
    # 2031-03-31 12:00 UTC is already 1 April (02:00) in Kiritimati (UTC+14).
    later = datetime(2031, 3, 31, 12, tzinfo=UTC)
    done = run_maintenance(content, later, timezone="Pacific/Kiritimati")
    created = {
        row[1]: (row[2].astimezone(UTC), row[3].astimezone(UTC)) for row in done if row[0] == "created"
    }
    assert created["partitions.content_objects_2031_03"] == (
        datetime(2031, 3, 1, tzinfo=UTC),
        datetime(2031, 4, 1, tzinfo=UTC),
    )
    assert (
        "partitions.content_objects_2031_06" in created
        and "partitions.content_objects_2031_07" not in created
    )
    with content.connect("app") as app, tenant_transaction(app, TENANT):
        app.execute("SET LOCAL TimeZone = 'Pacific/Kiritimati'")
        app.execute(
            "INSERT INTO app.content_objects (tenant_id, storage_key, created_at) "
            "VALUES (%s, 'utc/edge', '2031-03-31 23:30:00+00')",
            [TENANT],
        )
        home = app.execute(
            "SELECT tableoid::regclass::text FROM app.content_objects WHERE storage_key = 'utc/edge'"
        ).fetchone()[0]
    assert home == "partitions.content_objects_2031_03"
    with content.connect() as admin:
        admin.execute("SET TimeZone = 'UTC'")
        bound = admin.execute(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = 'partitions.attachments_2031_04'::regclass"
        ).fetchone()[0]
    assert bound == "FOR VALUES FROM ('2031-04-01 00:00:00+00') TO ('2031-05-01 00:00:00+00')"


# ---------------------------------------------------------------------------------- queue (daily)


STAND_IN = """
-- A stand-in for app.finished_jobs of schemas/queue/0004: daily partitions, the first ones made the old way,
-- in the session's zone (+05:30), so maintenance has to meet boundaries that are not UTC midnight.
CREATE SCHEMA partitions;
CREATE TABLE app.finished_jobs (
    tenant_id   uuid NOT NULL,
    id          bigint NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id, finished_at)
) PARTITION BY RANGE (finished_at);
SELECT internal.enable_tenant_rls('app.finished_jobs');
SET LOCAL TimeZone = 'Asia/Kolkata';
DO $$
DECLARE
    v_day date;
BEGIN
    FOR v_day IN SELECT generate_series(current_date - 1, current_date + 1, interval '1 day')::date LOOP
        EXECUTE format('CREATE TABLE partitions.%I PARTITION OF app.finished_jobs FOR VALUES FROM (%L) TO (%L)',
                       'finished_jobs_old_' || to_char(v_day, 'YYYYMMDD'), v_day, v_day + 1);
        PERFORM internal.enable_tenant_rls(format('partitions.%I', 'finished_jobs_old_' || to_char(v_day, 'YYYYMMDD'))::regclass);
    END LOOP;
END
$$;
"""


@pytest.fixture(scope="module")
def queue_stand_in(devenv_env, tmp_path_factory) -> TierDb:
    folder = tmp_path_factory.mktemp("queue-stand-in")
    shutil.copy(REPO_ROOT / "schemas" / "shared" / "0001_foundation.sql", folder / "0001_foundation.sql")
    (folder / "0002_finished_jobs.sql").write_text(STAND_IN)
    shutil.copy(SHARED, folder / "0003_partition_maintenance.sql")
    shutil.copy(QUEUE_POLICY, folder / "0004_finished_jobs_partition_policy.sql")
    db = provision("content", directory=folder)  # content's duties: app and readonly, as for any tier
    yield db
    teardown(db)


def contiguous(found: dict[str, tuple[datetime, datetime]]) -> list[str]:
    spans = sorted(found.values())
    return [f"{a[1]} then {b[0]}" for a, b in itertools.pairwise(spans) if a[1] != b[0]]


def test_days_ahead_meet_the_old_boundaries_without_gap_or_overlap(queue_stand_in):
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with queue_stand_in.connect() as admin:
        found = ranges(admin, "app.finished_jobs")
        policy = admin.execute(
            "SELECT granularity, premake, retention FROM internal.partition_policies "
            "WHERE parent = 'app.finished_jobs'::regclass"
        ).fetchone()
    assert policy == ("day", 7, timedelta(days=7))
    assert contiguous(found) == []
    for ahead in range(3, 8):  # the registration's first run: up to seven days ahead, UTC midnights
        day = today + timedelta(days=ahead)
        assert found[f"finished_jobs_p{day:%Y%m%d}"] == (day, day + timedelta(days=1))
    assert run_maintenance(queue_stand_in) == []


def test_days_past_seven_days_are_dropped_and_days_ahead_made(queue_stand_in):
    later = datetime.now(UTC) + timedelta(days=10)
    start = later.replace(hour=0, minute=0, second=0, microsecond=0)
    done = run_maintenance(queue_stand_in, later, timezone="Pacific/Kiritimati")
    assert not [row for row in done if row[0] == "failed"]
    assert run_maintenance(queue_stand_in, later) == []
    with queue_stand_in.connect() as admin:
        found = ranges(admin, "app.finished_jobs")
        assert mig.tenant_table_problems(admin) == []
    assert all(hi > later - timedelta(days=7) for _lo, hi in found.values())
    assert any(row[0] == "dropped" and "finished_jobs_old_" in row[1] for row in done)
    for ahead in range(8):
        day = start + timedelta(days=ahead)
        assert found[f"finished_jobs_p{day:%Y%m%d}"] == (day, day + timedelta(days=1))
    with queue_stand_in.connect("migrator") as owner, tenant_transaction(owner, TENANT):
        owner.execute(
            "INSERT INTO app.finished_jobs (tenant_id, id, finished_at) VALUES (%s, 1, %s)",
            [TENANT, start + timedelta(days=7, hours=23)],
        )


def test_maintain_from_python_reports_the_steps(queue_stand_in):
    later = datetime.now(UTC) + timedelta(days=11)
    with queue_stand_in.connect() as admin:
        actions = maintain(admin, queue_stand_in.role("migrator"), later)
        assert {a.action for a in actions} == {"created", "dropped"}
        assert maintain(admin, queue_stand_in.role("migrator"), later) == []
    assert str(actions[0]).startswith("created partitions.finished_jobs_p")


def test_the_queue_tier_registers_finished_jobs(devenv_env):
    db = provision("queue")
    try:
        with db.connect() as admin:
            found = ranges(admin, "app.finished_jobs")
            week = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=7)
            assert f"finished_jobs_p{week:%Y%m%d}" in found
            assert contiguous(found) == []
        assert run_maintenance(db) == []
    finally:
        teardown(db)


# ------------------------------------------------------------------------------------------ pg_cron


@pytest.fixture(scope="module")
def cron_server(devenv_env):
    """The devenv server when it preloads pg_cron; else a private cluster with the devenv's settings."""
    with connect(admin_target("content")) as conn:
        if cron.cron_database(conn) is not None:
            yield None
            return
    if not pg_cron_installed():
        pytest.fail("pg_cron is not installed (postgresql-15-cron; tools/bootstrap.sh installs it)")
    with private_cluster("itest-cron-", port=5497) as service:
        yield service


def test_the_pg_cron_job_exists_runs_as_the_migrator_and_succeeds(cron_server):
    db = provision("content")
    provider = MaintenanceScheduleProvider()
    args = MaintenanceScheduleArgs(
        tier="content", database=db.database, username=db.role("migrator"), schedule="* * * * *"
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
            assert job is not None
            assert (job["jobname"], job["database"], job["username"], job["command"]) == (
                JOB_NAME,
                db.database,
                db.role("migrator"),
                "SELECT internal.maintain_partitions()",
            )
            deadline, runs = time.monotonic() + 100, []
            while time.monotonic() < deadline:
                runs = cron.job_runs(conn, jobid)
                if any(run["status"] in ("succeeded", "failed") for run in runs):
                    break
                time.sleep(2)
            finished = [run for run in runs if run["status"] in ("succeeded", "failed")]
            assert finished, f"the job did not run within 100 s: {runs}"
            assert finished[0]["status"] == "succeeded", finished[0]["return_message"]
        assert provider.read(created.id, created.outs).outs["drift"] == []
        with connect(db.target, cron_db) as conn:
            conn.execute("SELECT cron.alter_job(%s, schedule => '0 3 * * *')", [jobid])
        drift = provider.read(created.id, created.outs).outs["drift"]
        assert drift == [f"pg_cron job {JOB_NAME}: schedule is '0 3 * * *', not '* * * * *'"]
        assert provider.diff(created.id, {**created.outs, "drift": drift}, props).changes
        updated = provider.update(created.id, created.outs, props)
        assert updated.outs["jobid"] == jobid
        assert provider.read(created.id, updated.outs).outs["drift"] == []
        # A job of our name that is not the recorded one is never taken over nor removed.
        with pytest.raises(Exception, match="not the one this stack recorded"):
            provider.create(props)
        provider.delete(str(jobid + 1000), {**updated.outs, "jobid": jobid + 1000})
        with connect(db.target, cron_db) as conn:
            assert cron.job_by_id(conn, jobid) is not None, "a delete with another id removed our job"
    finally:
        if created is not None:
            provider.delete(created.id, created.outs)
            with connect(db.target, created.outs["cron_database"]) as conn:
                assert cron.job_get(conn, JOB_NAME, db.role("migrator")) is None
        teardown(db)
    assert provider.read(created.id, created.outs).id == ""  # gone: the next up would create it again


def test_a_server_without_pg_cron_fails_with_the_alternative(devenv_env, monkeypatch):
    provider = MaintenanceScheduleProvider()
    monkeypatch.setattr(MaintenanceScheduleProvider, "_cron_database", lambda self, target, props: None)
    args = MaintenanceScheduleArgs(tier="queue", database="pm_x_queue", username="pm_x_queue_migrator")
    with pytest.raises(Exception, match=r"does not run pg_cron .* postgres\.queue\.partition_schedule"):
        provider.create({**args.props(), "jobid": None, "cron_database": None})
