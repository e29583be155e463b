"""The partition maintenance schedule of a tier, as a pg_cron job (a Pulumi dynamic resource).

One job per tier database, ``penguinmails_maintain_partitions`` of the tier's migrator (jobs are unique per
name and role), running ``SELECT internal.maintain_partitions()`` hourly in that database as the migrator,
which owns the partitioned tables (no SECURITY DEFINER needed). The schedule is in GMT (pg_cron 1.4); the
function computes its boundaries in UTC anyway.

The server must preload pg_cron (``shared_preload_libraries``; ``cron.database_name`` names the database
of its launcher, where the resource creates the extension if missing and where the jobs live). A server
without it (a hosted endpoint that does not offer it) fails with a message naming the alternative: run
``python -m modules.postgres.maintenance`` from the host's scheduler, with the tier's ``partition_schedule``
set to ``external`` so the stack declares no job.

Drift: ``read`` compares the job on the server with the state (schedule, command, database, active) and
reports differences in ``drift``; a deleted job reads as gone, so the next ``up`` creates it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic as dynamic

from modules.config.model import TIERS
from modules.postgres import admin, cron
from modules.postgres.client import PostgresError, ServerTarget, connect, run
from modules.postgres.resources import _changed, _PostgresProvider, _read_result, _unknown, with_server

JOB_NAME = "penguinmails_maintain_partitions"
DEFAULT_SCHEDULE = "17 * * * *"  # hourly, at a minute nothing else of ours uses
DEFAULT_COMMAND = "SELECT internal.maintain_partitions()"
MAINTENANCE_FUNCTION = "internal.maintain_partitions(timestamptz)"
CONFIG_FIELD = "partition_schedule"


@dataclass(frozen=True)
class MaintenanceScheduleArgs:
    """What the job is: where it runs (tier, database), as whom, when, and what."""

    tier: str
    database: pulumi.Input[str]
    username: pulumi.Input[str]
    schedule: str = DEFAULT_SCHEDULE
    command: str = DEFAULT_COMMAND
    active: bool = True
    # The admin connection of a tier on a fleet VPS (secret); None: from the stack config.
    server: pulumi.Input[dict[str, Any]] | None = None

    def props(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "database": self.database,
            "username": self.username,
            "schedule": self.schedule,
            "command": self.command,
            "active": self.active,
            "jobname": JOB_NAME,
            "drift": [],
        }


class MaintenanceScheduleProvider(_PostgresProvider):
    """pg_cron job of one tier; the class attributes say which job (RetentionScheduleProvider reuses it)."""

    kind = "MaintenanceSchedule"
    job_name = JOB_NAME
    function = MAINTENANCE_FUNCTION
    config_field = CONFIG_FIELD
    migration = "partition_maintenance.sql"
    external_command = "python -m modules.postgres.maintenance"
    external_every = "hourly"

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures = []
        if news.get("tier") not in TIERS:
            failures.append(
                dynamic.CheckFailure("tier", f"must be one of {', '.join(TIERS)}, got {news.get('tier')!r}")
            )
        for key in ("database", "username"):
            value = news.get(key)
            problem = admin.database_name_problem(value) if key == "database" else admin.name_problem(value)
            if problem and not _unknown(value):
                failures.append(dynamic.CheckFailure(key, problem))
        problem = cron.schedule_problem(news.get("schedule"))
        if problem:
            failures.append(dynamic.CheckFailure("schedule", problem))
        if not isinstance(news.get("command"), str) or not news["command"].strip():
            failures.append(dynamic.CheckFailure("command", "must be the SQL the job runs"))
        if not isinstance(news.get("active"), bool):
            failures.append(dynamic.CheckFailure("active", "must be true or false"))
        return dynamic.CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = _changed(
            olds, news, ("tier", "database", "username", "schedule", "command", "active", "drift")
        )
        replaces = [key for key in changed if key in ("tier", "database", "username")]
        return dynamic.DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=True)

    def _label(self, props: dict[str, Any]) -> str:
        return f"{self.kind}[{props['database']}]"

    def _cron_database(self, target: ServerTarget, props: dict[str, Any]) -> str | None:
        with connect(target, application_name="penguinmails-schedule") as conn:
            return run(target, "read the pg_cron settings", lambda: cron.cron_database(conn))

    def _require_cron(self, target: ServerTarget, props: dict[str, Any]) -> str:
        database = self._cron_database(target, props)
        if database is None:
            raise PostgresError(
                f"{self._label(props)}: {target.label} does not run pg_cron (shared_preload_libraries lacks "
                "pg_cron); install it (Debian: postgresql-15-cron) and preload it, or set "
                f'postgres.{props["tier"]}.{self.config_field} to "external" and run '
                f"`{self.external_command}` {self.external_every} from the host's scheduler"
            )
        return database

    def _install(self, props: dict[str, Any], expected_jobid: int | None) -> dict[str, Any]:
        """Schedule the job; ``expected_jobid`` is the one in state (None on create). A job of that name and
        role that is not the recorded one is not ours: it is left alone and the step fails."""
        target = self._target(props)
        cron_db = self._require_cron(target, props)
        with connect(target, props["database"], application_name="penguinmails-schedule") as conn:
            found = run(
                target,
                f"look up {self.function}",
                lambda: conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", [self.function]).fetchone(),
            )
        if not found[0]:
            raise PostgresError(
                f"{self._label(props)}: {self.function} does not exist in {props['database']}; only a tier "
                f"whose migrations link schemas/shared/{self.migration} can be scheduled"
            )
        with connect(target, cron_db, application_name="penguinmails-schedule") as conn:
            if not run(target, f"CREATE EXTENSION pg_cron in {cron_db}", lambda: cron.extension_ready(conn)):
                raise PostgresError(
                    f"{self._label(props)}: pg_cron is preloaded on {target.label} but the extension is not "
                    f"available to database {cron_db}; install postgresql-15-cron on the server"
                )
            live = run(
                target, f"read {self.job_name}", lambda: cron.job_get(conn, self.job_name, props["username"])
            )
            if live is not None and live["jobid"] != expected_jobid:
                raise PostgresError(
                    f"{self._label(props)}: pg_cron job {self.job_name} of {props['username']} already exists on "
                    f"{target.label} (jobid {live['jobid']}) and is not the one this stack recorded "
                    f"({expected_jobid}); unschedule it if it is stale, then run `up` again"
                )
            jobid = run(
                target,
                f"schedule {self.job_name}",
                lambda: cron.job_schedule(
                    conn,
                    self.job_name,
                    props["schedule"],
                    props["command"],
                    props["database"],
                    props["username"],
                    bool(props["active"]),
                ),
            )
        return {**props, "jobname": self.job_name, "jobid": jobid, "cron_database": cron_db, "drift": []}

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        outs = self._install(props, None)
        return dynamic.CreateResult(id_=str(outs["jobid"]), outs=outs)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(outs=self._install(news, _recorded_jobid(id_, olds)))

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        target = self._target(props)
        cron_db = self._cron_database(target, props)
        if cron_db is None:
            return dynamic.ReadResult(id_="", outs={})  # no pg_cron any more: the job is gone with it
        with connect(target, cron_db, application_name="penguinmails-schedule") as conn:
            live = run(
                target, f"read {self.job_name}", lambda: cron.job_get(conn, self.job_name, props["username"])
            )
        if live is None:
            return dynamic.ReadResult(id_="", outs={})
        want = {**props, "jobname": self.job_name}
        outs = {**props, "jobid": live["jobid"], "cron_database": cron_db}
        outs["drift"] = cron.job_problems(live, want)
        return _read_result(str(live["jobid"]), outs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        target = self._target(props)
        cron_db = self._cron_database(target, props)
        if cron_db is None:
            return
        with connect(target, cron_db, application_name="penguinmails-schedule") as conn:
            live = run(
                target, f"read {self.job_name}", lambda: cron.job_get(conn, self.job_name, props["username"])
            )
            # Only the job this stack scheduled (its recorded id); another one of that name is not ours.
            if live is not None and live["jobid"] == _recorded_jobid(id_, props):
                run(target, f"unschedule {self.job_name}", lambda: cron.job_unschedule(conn, live["jobid"]))


def _recorded_jobid(id_: str, props: dict[str, Any]) -> int | None:
    recorded = props.get("jobid") or (id_ if str(id_).isdigit() else None)
    return int(recorded) if recorded is not None else None


class MaintenanceSchedule(dynamic.Resource, module="postgres", name="MaintenanceSchedule"):
    """The hourly pg_cron job that keeps a tier's partitions (``jobid`` is pg_cron's id)."""

    jobid: pulumi.Output[int]
    jobname: pulumi.Output[str]
    cron_database: pulumi.Output[str]
    drift: pulumi.Output[list]

    def __init__(
        self, resource_name: str, args: MaintenanceScheduleArgs, opts: pulumi.ResourceOptions | None = None
    ):
        props = {**args.props(), "jobid": None, "cron_database": None}
        props, opts = with_server(props, args.server, opts)
        super().__init__(MaintenanceScheduleProvider(), resource_name, props, opts)
