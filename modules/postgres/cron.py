"""pg_cron on a tier's server, as plain functions on an admin connection (psycopg 3).

pg_cron (1.4 on Debian 12) runs one launcher per server, in the database ``cron.database_name`` names; a
job runs in any database of the server as any role, and only a superuser may schedule one for another role
(``cron.schedule_in_database(…, username)``). Jobs are unique per (jobname, username), and scheduling an
existing name changes it in place. Schedules are read in GMT (1.4 has no ``cron.timezone``). Every run is
recorded in ``cron.job_run_details`` (``cron.log_run``, on by default).
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

EXTENSION = "pg_cron"
# Five cron fields (minute hour day month weekday) or one of the @-forms pg_cron 1.4 accepts.
SCHEDULE_RE = re.compile(r"^(@(hourly|daily|weekly|monthly|yearly|annually|reboot|restart)|(\S+\s+){4}\S+)$")
JOB_KEYS = ("jobid", "jobname", "schedule", "command", "database", "username", "active")


def schedule_problem(schedule: Any) -> str | None:
    if not isinstance(schedule, str) or not SCHEDULE_RE.match(schedule.strip()):
        return f"must be a cron schedule of five fields (minute hour day month weekday, in GMT), got {schedule!r}"
    return None


def cron_database(conn: psycopg.Connection) -> str | None:
    """The database pg_cron's launcher runs in, or None when the server did not preload pg_cron."""
    row = conn.execute(
        "SELECT current_setting('cron.database_name', true), current_setting('shared_preload_libraries')"
    ).fetchone()
    libraries = [part.strip().strip('"') for part in (row[1] or "").split(",")]
    return row[0] if row[0] and EXTENSION in libraries else None


def extension_ready(conn: psycopg.Connection) -> bool:
    """True when pg_cron is installed in this database (the launcher's), after creating it if it can be.

    Several tiers' schedules share the launcher's database and are created in parallel: IF NOT EXISTS
    alone races (two creators, one unique violation), so creators take turns on an advisory lock.
    """
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s", [EXTENSION]).fetchone():
        return True
    if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s", [EXTENSION]).fetchone():
        return False
    conn.execute("SELECT pg_advisory_lock(hashtext('penguinmails:create-extension:pg_cron'))")
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        if not conn.autocommit:
            conn.commit()
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext('penguinmails:create-extension:pg_cron'))")
        if not conn.autocommit:
            conn.commit()
    return True


def job_get(conn: psycopg.Connection, jobname: str, username: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT jobid, jobname, schedule, command, database, username, active FROM cron.job "
        "WHERE jobname = %s AND username = %s",
        [jobname, username],
    ).fetchone()
    return dict(zip(JOB_KEYS, row, strict=True)) if row else None


def job_by_id(conn: psycopg.Connection, jobid: int) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT jobid, jobname, schedule, command, database, username, active FROM cron.job WHERE jobid = %s",
        [jobid],
    ).fetchone()
    return dict(zip(JOB_KEYS, row, strict=True)) if row else None


def job_schedule(
    conn: psycopg.Connection,
    jobname: str,
    schedule: str,
    command: str,
    database: str,
    username: str,
    active: bool = True,
) -> int:
    """Create the job, or change the one of that (jobname, username) in place; returns its id."""
    row = conn.execute(
        "SELECT cron.schedule_in_database(%s, %s, %s, %s, %s, %s)",
        [jobname, schedule, command, database, username, active],
    ).fetchone()
    return int(row[0])


def job_unschedule(conn: psycopg.Connection, jobid: int) -> bool:
    """Remove the job; False when it was gone already."""
    if job_by_id(conn, jobid) is None:
        return False
    conn.execute("SELECT cron.unschedule(%s::bigint)", [jobid])
    return True


def job_runs(conn: psycopg.Connection, jobid: int, limit: int = 5) -> list[dict[str, Any]]:
    """The job's latest runs, newest first: status ('succeeded', 'failed', 'running', …) and message."""
    rows = conn.execute(
        "SELECT runid, status, return_message, start_time, end_time FROM cron.job_run_details "
        "WHERE jobid = %s ORDER BY runid DESC LIMIT %s",
        [jobid, limit],
    ).fetchall()
    keys = ("runid", "status", "return_message", "start_time", "end_time")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def job_problems(live: dict[str, Any] | None, want: dict[str, Any]) -> list[str]:
    """What differs between the job on the server and the declared one, in words."""
    if live is None:
        return [f"pg_cron job {want['jobname']} of {want['username']} is gone"]
    problems = []
    for key in ("schedule", "command", "database", "active"):
        if live[key] != want[key]:
            problems.append(f"pg_cron job {want['jobname']}: {key} is {live[key]!r}, not {want[key]!r}")
    return problems
