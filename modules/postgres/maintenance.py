"""Run a tier's partition maintenance once: what the pg_cron job runs, for on-call and external schedulers.

``maintain`` calls ``internal.maintain_partitions(p_now)`` as the tier's owner (``SET LOCAL ROLE``, as the
migrations do) and returns what it did. The command line runs it for every tier that has partition
policies, on the admin connection of each tier (the stack config is not read: the devenv's variables or
``PENGUINMAILS_POSTGRES_*`` give the server, ``--prefix`` the names)::

    python -m modules.postgres.maintenance --prefix pm_dev            # content and queue of the dev stack
    python -m modules.postgres.maintenance --prefix pm_dev --tier content --now 2027-07-01T00:00:00Z

It exits 1 when a step failed (the function returns it as ``failed``; the other steps still ran).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from modules.errors import ToolkitError
from modules.postgres.client import connect, run, server_target
from modules.providers import ProviderSettings

MAINTAINED_TIERS = ("content", "queue")  # the tiers whose migrations register partition policies


class MaintenanceFailed(ToolkitError):
    """A maintenance step failed; the others ran."""


@dataclass(frozen=True)
class MaintenanceAction:
    action: str  # created | dropped | failed | busy
    parent: str | None
    partition: str | None
    range_from: datetime | None
    range_to: datetime | None
    detail: str | None

    def __str__(self) -> str:
        span = (
            f" [{self.range_from:%Y-%m-%d %H:%M}Z, {self.range_to:%Y-%m-%d %H:%M}Z)"
            if self.range_from
            else ""
        )
        extra = f": {self.detail}" if self.detail else ""
        return f"{self.action} {self.partition or self.parent or ''}{span}{extra}".strip()


def maintain(conn: psycopg.Connection, owner: str, now: datetime | None = None) -> list[MaintenanceAction]:
    """One run of ``internal.maintain_partitions`` as ``owner``, in one transaction."""
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
        conn.execute("SET LOCAL TimeZone = 'UTC'")  # only how the ranges print; the function computes in UTC
        rows = conn.execute(
            "SELECT action, parent_table::text, partition_name, range_from, range_to, detail "
            "FROM internal.maintain_partitions(coalesce(%s::timestamptz, now()))",
            [now],
        ).fetchall()
    return [MaintenanceAction(*row) for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modules.postgres.maintenance", description=__doc__)
    parser.add_argument("--prefix", required=True, help="the stack's name prefix, e.g. pm_dev")
    parser.add_argument("--tier", action="append", choices=MAINTAINED_TIERS, help="default: every one")
    parser.add_argument("--now", type=datetime.fromisoformat, help="act as if it were this time (ISO 8601)")
    args = parser.parse_args(argv)
    failed = False
    for tier in args.tier or MAINTAINED_TIERS:
        target = server_target(ProviderSettings(), tier)
        database, owner = f"{args.prefix}_{tier}", f"{args.prefix}_{tier}_migrator"
        try:
            with connect(target, database, application_name="penguinmails-maintenance") as conn:
                actions = run(
                    target,
                    f"maintenance of {database}",
                    lambda conn=conn, owner=owner: maintain(conn, owner, args.now),
                )
        except ToolkitError as exc:
            print(f"{database}: {exc.message}", file=sys.stderr)
            failed = True
            continue
        print(f"{database}: {'nothing to do' if not actions else f'{len(actions)} step(s)'}")
        for action in actions:
            print(f"  {action}")
            failed |= action.action == "failed"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
