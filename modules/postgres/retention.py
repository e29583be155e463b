"""Row retention of a tier: the daily pg_cron job (a Pulumi dynamic resource) and a one-off run.

Partition maintenance drops whole old partitions; row retention deletes the history rows partitions do not
cover, per tier (``schemas/shared/retention.sql`` and each tier's ``*_retention_policies.sql``): content
bodies and attachments, the queue's failure logs and dead letters, analytics' daily roll-ups. The job is
``CALL retention.run(<days>)`` as the tier's migrator (the owner; the app role can neither call it nor read
what it records), daily, with ``<days>`` the tier's ``data_retention_days``. Each table's run lands in
``retention.runs``, which the exporter reads as the tier's readonly role.

The command line runs it once for on-call or an external scheduler (``retention_schedule: external``),
on the admin connection of each tier (``PENGUINMAILS_POSTGRES_*`` give the server, ``--prefix`` the
names)::

    python -m modules.postgres.retention --prefix pm_dev                  # every retained tier
    python -m modules.postgres.retention --prefix pm_dev --tier queue --days 30

It exits 1 when a table failed (the others still ran).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import pulumi
import pulumi.dynamic as dynamic
from psycopg import sql

from modules.config.model import DEFAULT_DATA_RETENTION_DAYS, RETAINED_TIERS
from modules.errors import ToolkitError
from modules.postgres.client import connect, run, server_target
from modules.postgres.resources import with_server
from modules.postgres.schedule import MaintenanceScheduleProvider
from modules.providers import ProviderSettings

JOB_NAME = "penguinmails_retention"
DEFAULT_SCHEDULE = "41 3 * * *"  # daily at 03:41 GMT, after the nightly analytics load (about 02:00 UTC)
DEFAULT_BATCH = 5000
RETENTION_PROCEDURE = "retention.run(integer,integer,timestamptz)"
CONFIG_FIELD = "retention_schedule"


def command_for(days: int, batch: int = DEFAULT_BATCH) -> str:
    """The SQL the job runs; ``days`` and ``batch`` are checked integers (no quoting needed)."""
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise ValueError(f"days must be an integer >= 1, got {days!r}")
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 100000:
        raise ValueError(f"batch must be an integer between 1 and 100000, got {batch!r}")
    return f"CALL retention.run({days}, {batch})"


@dataclass(frozen=True)
class RetentionRun:
    """One table's row in ``retention.runs``."""

    tier: str
    table: str
    deleted: int
    batches: int
    status: str
    detail: str | None
    cutoff: datetime
    finished_at: datetime

    def __str__(self) -> str:
        extra = f": {self.detail}" if self.detail else ""
        return f"{self.status} {self.table}: {self.deleted} row(s) older than {self.cutoff:%Y-%m-%d %H:%M}Z{extra}"


def runs_since(conn: psycopg.Connection, after_id: int) -> list[RetentionRun]:
    rows = conn.execute(
        "SELECT tier, table_name, deleted, batches, status, detail, cutoff, finished_at "
        "FROM retention.runs WHERE id > %s ORDER BY id",
        [after_id],
    ).fetchall()
    return [RetentionRun(*row) for row in rows]


def retain(
    conn: psycopg.Connection, owner: str, days: int, batch: int = DEFAULT_BATCH, now: datetime | None = None
) -> list[RetentionRun]:
    """One ``CALL retention.run`` as ``owner`` (``SET ROLE``, as the migrations do); the runs it recorded.

    ``conn`` must be in autocommit mode: the procedure commits after every batch. A failed table raises
    (after the others ran) with the recorded runs in :class:`RetentionFailed`."""
    if not conn.autocommit:
        raise ValueError("retain() needs an autocommit connection (retention.run commits per batch)")
    command_for(days, batch)  # the same checks as the job's command
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
    try:
        conn.execute("SET TimeZone = 'UTC'")
        last = conn.execute("SELECT coalesce(max(id), 0) FROM retention.runs").fetchone()[0]
        try:
            conn.execute("CALL retention.run(%s, %s, %s)", [days, batch, now])
        except psycopg.Error as exc:
            raise RetentionFailed(
                f"retention of {conn.info.dbname} failed: {str(exc).strip().splitlines()[0]}",
                runs_since(conn, last),
            ) from None
        return runs_since(conn, last)
    finally:
        conn.execute("RESET ROLE")


class RetentionFailed(ToolkitError):
    """A table's retention failed; the others ran (``runs`` has every table's row)."""

    def __init__(self, message: str, runs: list[RetentionRun]):
        super().__init__(message)
        self.runs = runs


# ------------------------------------------------------------------------------------ the pg_cron job


@dataclass(frozen=True)
class RetentionScheduleArgs:
    """What the job is: where it runs (tier, database), as whom, when, and how many days it keeps."""

    tier: str
    database: pulumi.Input[str]
    username: pulumi.Input[str]
    days: int
    schedule: str = DEFAULT_SCHEDULE
    batch: int = DEFAULT_BATCH
    active: bool = True
    # The admin connection of a tier on a fleet VPS (secret); None: from the stack config.
    server: pulumi.Input[dict[str, Any]] | None = None

    def props(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "database": self.database,
            "username": self.username,
            "schedule": self.schedule,
            "command": command_for(self.days, self.batch),
            "active": self.active,
            "jobname": JOB_NAME,
            "drift": [],
        }


class RetentionScheduleProvider(MaintenanceScheduleProvider):
    """The maintenance schedule's provider with this job's name, procedure and alternative."""

    kind = "RetentionSchedule"
    job_name = JOB_NAME
    function = RETENTION_PROCEDURE
    config_field = CONFIG_FIELD
    migration = "retention.sql"
    external_command = "python -m modules.postgres.retention"
    external_every = "daily"


class RetentionSchedule(dynamic.Resource, module="postgres", name="RetentionSchedule"):
    """The daily pg_cron job that deletes a tier's history rows past retention (``jobid`` is pg_cron's)."""

    jobid: pulumi.Output[int]
    jobname: pulumi.Output[str]
    cron_database: pulumi.Output[str]
    drift: pulumi.Output[list]

    def __init__(
        self, resource_name: str, args: RetentionScheduleArgs, opts: pulumi.ResourceOptions | None = None
    ):
        props = {**args.props(), "jobid": None, "cron_database": None}
        props, opts = with_server(props, args.server, opts)
        super().__init__(RetentionScheduleProvider(), resource_name, props, opts)


# ------------------------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modules.postgres.retention", description=__doc__)
    parser.add_argument("--prefix", required=True, help="the stack's name prefix, e.g. pm_dev")
    parser.add_argument("--tier", action="append", choices=RETAINED_TIERS, help="default: every one")
    parser.add_argument("--days", type=int, help="keep this many days (default: the tier's default)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="rows per committed batch")
    args = parser.parse_args(argv)
    if args.days is not None and args.days < 1:
        parser.error("--days must be at least 1")
    if not 1 <= args.batch <= 100000:
        parser.error("--batch must be between 1 and 100000")
    failed = False
    for tier in args.tier or RETAINED_TIERS:
        target = server_target(ProviderSettings(), tier)
        database, owner = f"{args.prefix}_{tier}", f"{args.prefix}_{tier}_migrator"
        days = args.days or DEFAULT_DATA_RETENTION_DAYS[tier]
        try:
            with connect(target, database, application_name="penguinmails-retention") as conn:
                runs = run(
                    target,
                    f"retention of {database}",
                    lambda conn=conn, owner=owner, days=days: retain(conn, owner, days, args.batch),
                )
        except RetentionFailed as exc:
            print(f"{database}: {exc.message}", file=sys.stderr)
            runs, failed = exc.runs, True
        except ToolkitError as exc:
            print(f"{database}: {exc.message}", file=sys.stderr)
            failed = True
            continue
        print(f"{database}: kept {days} day(s), {sum(r.deleted for r in runs)} row(s) deleted")
        for item in runs:
            print(f"  {item}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
