"""The backup scheduler's cron parsing and the jobs a stack declares."""

from __future__ import annotations

import datetime

import pytest

from modules.config.backup import BackupConfig
from modules.postgres.backup.scheduler import Cron, Job, ScheduleError, cron_lines, due, jobs_for

UTC = datetime.UTC


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_weekly_full_and_daily_diff_defaults():
    config = BackupConfig()
    full, diff = Cron.parse(config.oltp.full_schedule), Cron.parse(config.oltp.diff_schedule)
    sunday, monday = at("2026-12-06 02:30"), at("2026-12-07 02:30")
    assert full.matches(sunday) and not full.matches(monday)
    assert diff.matches(monday) and not diff.matches(sunday)
    assert not full.matches(at("2026-12-06 02:31"))


@pytest.mark.parametrize(
    ("expression", "when", "expected"),
    [
        ("*/15 * * * *", "2026-12-03 10:45", True),
        ("*/15 * * * *", "2026-12-03 10:46", False),
        ("0 5 * * 6", "2026-12-05 05:00", True),  # Saturday
        ("0 0 * * 7", "2026-12-06 00:00", True),  # 7 is Sunday too
        ("0 0 1 * 1", "2026-12-07 00:00", True),  # day and weekday both set: either matches (a Monday)
        ("0 0 1 * 1", "2026-12-01 00:00", True),  # ... or the 1st
        ("0 0 1 * 1", "2026-12-02 00:00", False),
        ("@daily", "2026-12-02 00:00", True),
        ("10-20/5 1,2 * * *", "2026-12-02 02:15", True),
    ],
)
def test_matches(expression, when, expected):
    assert Cron.parse(expression).matches(at(when)) is expected


@pytest.mark.parametrize("expression", ["* * * *", "61 * * * *", "a * * * *", "5-1 * * * *", "*/0 * * * *"])
def test_bad_schedules_are_refused_with_the_field(expression):
    with pytest.raises(ScheduleError, match="cron"):
        Cron.parse(expression)


def test_jobs_of_a_shared_stanza_and_cron_lines():
    jobs = jobs_for("prod", {"c1": ["oltp", "queue"]}, BackupConfig())
    args = [" ".join(job.args) for job in jobs]
    assert "db backup --stack prod --tier oltp --type full" in args
    assert "db backup --stack prod --tier oltp --type diff" in args
    assert {"db restore-drill --stack prod --tier oltp", "db restore-drill --stack prod --tier queue"} <= set(
        args
    )
    lines = cron_lines(jobs)
    assert (
        lines[0] == "CRON_TZ=UTC"
        and "0 5 * * 6 root /usr/local/bin/penguinmails db restore-drill" in lines[-1]
    )
    assert due([Job("30 2 * * 0", ["x"])], at("2026-12-06 02:30")) == [Job("30 2 * * 0", ["x"])]
