"""The pg_cron schedule resource without a server: input checks, diffs, drift words, the shared SQL file."""

from __future__ import annotations

import os
import pwd

import pytest

from devenv import postgres as devenv_postgres
from modules.postgres import cron
from modules.postgres import migrations as mig
from modules.postgres.schedule import (
    DEFAULT_COMMAND,
    DEFAULT_SCHEDULE,
    JOB_NAME,
    MaintenanceScheduleArgs,
    MaintenanceScheduleProvider,
)
from tests.support.postgres import REPO_ROOT

SHARED = REPO_ROOT / "schemas" / "shared" / "partition_maintenance.sql"


def props(**overrides):
    args = MaintenanceScheduleArgs(
        tier="content", database="pm_dev_content", username="pm_dev_content_migrator"
    )
    return {**args.props(), "jobid": None, "cron_database": None, **overrides}


def test_defaults_run_the_maintenance_hourly_as_the_given_role():
    p = props()
    assert (p["schedule"], p["command"], p["jobname"], p["active"]) == (
        DEFAULT_SCHEDULE,
        DEFAULT_COMMAND,
        JOB_NAME,
        True,
    )
    assert DEFAULT_SCHEDULE.split()[1:] == ["*", "*", "*", "*"]  # every hour
    assert MaintenanceScheduleProvider().check({}, p).failures == []


def test_check_collects_every_bad_input():
    failures = (
        MaintenanceScheduleProvider()
        .check(
            {},
            props(tier="olap", username="Robert'); DROP", schedule="every hour", command=" ", active="yes"),
        )
        .failures
    )
    assert sorted(f.property for f in failures) == ["active", "command", "schedule", "tier", "username"]


@pytest.mark.parametrize("schedule", ["17 * * * *", "*/5 * * * *", "@hourly", "0 3 * * 1-5"])
def test_cron_schedules_pg_cron_accepts(schedule):
    assert cron.schedule_problem(schedule) is None


@pytest.mark.parametrize("schedule", ["* * * *", "30 seconds", "", None, "@often"])
def test_schedules_refused(schedule):
    assert "five fields" in cron.schedule_problem(schedule)


def test_diff_replaces_the_job_for_another_database_or_role_and_updates_the_rest():
    provider, old = MaintenanceScheduleProvider(), props()
    assert not provider.diff("1", old, props()).changes
    moved = provider.diff("1", old, props(database="pm_dev_queue"))
    assert moved.replaces == ["database"] and moved.delete_before_replace
    retimed = provider.diff("1", old, props(schedule="5 * * * *"))
    assert retimed.changes and retimed.replaces == []
    drifted = provider.diff("1", {**old, "drift": ["pg_cron job x: schedule is …"]}, props())
    assert drifted.changes and drifted.replaces == []


def test_job_drift_in_words():
    want = {**props(), "jobname": JOB_NAME}
    live = {k: want[k] for k in ("jobname", "schedule", "command", "database", "username", "active")}
    assert cron.job_problems(live, want) == []
    assert cron.job_problems({**live, "active": False}, want) == [
        f"pg_cron job {JOB_NAME}: active is False, not True"
    ]
    assert cron.job_problems(None, want) == [f"pg_cron job {JOB_NAME} of pm_dev_content_migrator is gone"]


@pytest.mark.parametrize(
    "tier, name", [("content", "0004_partition_maintenance.sql"), ("queue", "0005_partition_maintenance.sql")]
)
def test_the_tiers_apply_the_one_shared_maintenance_file(tier, name):
    """One body for every tier: each tier's file is the shared one, word for word (a link, not a copy)."""
    path = REPO_ROOT / "schemas" / tier / name
    assert path.is_symlink() and path.resolve() == SHARED.resolve()
    applied = {f.name: f for f in mig.load_dir(REPO_ROOT / "schemas" / tier)}
    assert applied[name].sha256 == mig.sha256_text(SHARED.read_text())


def test_the_shared_file_defines_no_security_definer_and_pins_search_path():
    text = SHARED.read_text()
    assert "SECURITY DEFINER" not in text
    assert text.count("CREATE FUNCTION") == text.count("SET search_path = pg_catalog, pg_temp") == 4
    assert "AT TIME ZONE 'UTC'" in text


def test_the_devenv_preloads_pg_cron_when_it_is_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(devenv_postgres, "RELOCATED_ROOT", tmp_path / "relocated")  # tmp_path is private
    service = devenv_postgres.PostgresService(root=tmp_path)
    service.data_dir.mkdir(parents=True)
    (service.data_dir / "postgresql.conf").write_text("# initdb's file\n")
    me = pwd.getpwuid(os.getuid())
    for installed in (True, False):
        monkeypatch.setattr(devenv_postgres, "pg_cron_installed", lambda installed=installed: installed)
        service._write_config(me)
        ours = (service.data_dir / "penguinmails.conf").read_text()
        assert ("shared_preload_libraries = 'pg_cron'" in ours) is installed
        assert ("cron.use_background_workers = on" in ours) is installed
        assert "timezone = 'UTC'" in ours
