"""`penguinmails db`: backups (pgBackRest), PITR restore and the restore drill of a stack's tiers.

A host's cron runs ``db backup --type full|diff`` on the tier's schedule and ``db restore-drill`` weekly
(``postgres.backup.drill_schedule``); the dev stack's devenv ``backup-scheduler`` does the same here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.table import Table

from modules.cli.console import console
from modules.config.model import TIERS, PostgresConfig
from modules.errors import ToolkitError
from modules.postgres.backup import pgbackrest as pb
from modules.postgres.backup import restore as rs
from modules.postgres.backup.resource import stanza_for, stanza_name
from modules.postgres.client import server_target
from modules.postgres.component import default_prefix, tier_names
from modules.providers import ProviderSettings

app = typer.Typer(no_args_is_help=True, help="Backups, restore and the restore drill.")


def stack_settings(stack: str, cwd: Path) -> ProviderSettings:
    from modules.cli.fleet_cmd import stack_settings as from_pulumi

    return from_pulumi(stack, cwd)


@dataclass
class TierContext:
    cluster: pb.Cluster
    database: str


def tier_context(settings: ProviderSettings, stack: str, tier: str) -> TierContext:
    if tier not in TIERS:
        raise ToolkitError(f"--tier must be one of {', '.join(TIERS)}, got {tier!r}")
    postgres = PostgresConfig.model_validate(settings.section("postgres"))
    stanza_for(postgres, stack, tier)  # an enabled local tier, or a clear error
    target = server_target(settings, tier)
    # Named after the port the cluster really listens on (a dev stack's devenv variables may move it).
    cluster = pb.cluster_of(target, stanza_name(target.port))
    stanza = cluster.stanza
    if not cluster.config_file.exists():
        raise pb.BackupError(
            f"stanza {stanza}: not set up on this machine yet; run `pulumi up` for stack {stack!r}"
        )
    database = tier_names(tier, postgres.tiers()[tier], default_prefix(stack)).database
    return TierContext(cluster, database)


STACK = typer.Option("dev", "--stack", "-s", help="Stack name.")
TIER = typer.Option("oltp", "--tier", "-t", help="Tier: oltp, content, analytics or queue.")
CWD = typer.Option(Path("."), "--cwd", help="Folder holding Pulumi.yaml.")


@app.command("backup")
def backup_command(
    stack: str = STACK,
    tier: str = TIER,
    kind: str = typer.Option("full", "--type", help="full, diff or incr."),
    cwd: Path = CWD,
) -> None:
    """Take a backup of the tier's cluster (its stanza)."""
    if kind not in ("full", "diff", "incr"):
        raise ToolkitError(f"--type must be full, diff or incr, got {kind!r}")
    ctx = tier_context(stack_settings(stack, cwd), stack, tier)
    try:
        pb.run(ctx.cluster, "backup", f"--type={kind}")
    except pb.BackupError as exc:
        pb.record_result(ctx.cluster, False, exc.message)
        raise
    pb.record_result(ctx.cluster, True)
    last = pb.last_backup(pb.info(ctx.cluster)) or {}
    console.print(f"stanza {ctx.cluster.stanza}: {kind} backup {last.get('label', '?')} done")


@app.command("info")
def info_command(
    stack: str = STACK, tier: str = TIER, cwd: Path = CWD, as_json: bool = typer.Option(False, "--json")
) -> None:
    """The stanza's backups (only complete ones are listed and used)."""
    ctx = tier_context(stack_settings(stack, cwd), stack, tier)
    entry = pb.info(ctx.cluster)
    if as_json:
        console.print_json(json.dumps(entry))
        return
    if entry is None:
        raise pb.BackupError(
            f"stanza {ctx.cluster.stanza}: missing from the repository; run `pulumi up` to recreate it"
        )
    table = Table("label", "type", "started (UTC)", "seconds", "size", "repo size")
    import datetime

    for b in entry.get("backup") or []:
        start, stop = b["timestamp"]["start"], b["timestamp"]["stop"]
        table.add_row(
            b["label"],
            b["type"],
            datetime.datetime.fromtimestamp(start, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            str(stop - start),
            f"{b['info']['size'] / 1e6:.1f} MB",
            f"{b['info']['repository']['delta'] / 1e6:.1f} MB",
        )
    console.print(f"stanza {ctx.cluster.stanza}: {entry.get('status', {}).get('message', '')}")
    console.print(table)


@app.command("restore")
def restore_command(
    target: Path = typer.Option(..., "--target", help="New data folder for the restored cluster."),
    stack: str = STACK,
    tier: str = TIER,
    to: str | None = typer.Option(None, "--to", help="Recover to this time (e.g. '2026-12-03 15:00:00+00')."),
    port: int | None = typer.Option(
        None, "--port", help="Port of the restored cluster (default: a free one)."
    ),
    in_place: bool = typer.Option(False, "--in-place", help="Replace the live cluster (needs --yes)."),
    yes: bool = typer.Option(False, "--yes", help="Confirm --in-place."),
    cwd: Path = CWD,
) -> None:
    """Restore the latest backup (to --to) into a new cluster; never over a live one without --in-place --yes."""
    if in_place and not yes:
        raise ToolkitError("--in-place replaces the live cluster and its data: add --yes to confirm")
    ctx = tier_context(stack_settings(stack, cwd), stack, tier)
    folder = ctx.cluster.data_dir if in_place else target
    restored = rs.restore(ctx.cluster, folder, port=port, to_time=to, in_place=in_place)
    console.print(
        f"restored stanza {ctx.cluster.stanza} into {restored.data_dir}, running on port {restored.port}"
    )


@app.command("restore-drill")
def drill_command(stack: str = STACK, tier: str = TIER, cwd: Path = CWD) -> None:
    """Restore the latest backup to a fresh restore point in a scratch cluster and compare row counts and the
    migration ledger with the source; exit 4 on any mismatch or failed restore."""
    ctx = tier_context(stack_settings(stack, cwd), stack, tier)
    report = rs.drill(
        ctx.cluster, ctx.database, on_phase=lambda name, secs: console.print(f"  {name}: {secs:.1f} s")
    )
    table = Table("table", "source rows", "restored rows", "ok")
    restored = report.restored.counts if report.restored else {}
    for name, count in report.source.counts.items():
        have = restored.get(name)
        table.add_row(name, str(count), "-" if have is None else str(have), "yes" if have == count else "NO")
    ledger_ok = report.restored is not None and report.restored.ledger == report.source.ledger
    table.add_row(
        "migration ledger",
        f"{len(report.source.ledger)} migrations",
        f"{len(report.restored.ledger)} migrations" if report.restored else "-",
        "yes" if ledger_ok else "NO",
    )
    console.print(table)
    phases = Table("phase", "seconds")
    for name, secs in report.phases.items():
        phases.add_row(name, f"{secs:.1f}")
    console.print(phases)
    if not report.ok:
        raise rs.DrillFailed(f"restore drill of {stack}/{tier} FAILED: " + "; ".join(report.problems))
    console.print(f"restore drill of {stack}/{tier} passed in {report.phases.get('total', 0):.1f} s")


def _jobs(stack: str, cwd: Path):
    from modules.postgres.backup import scheduler
    from modules.postgres.backup.resource import stanza_groups

    settings = stack_settings(stack, cwd)
    postgres = PostgresConfig.model_validate(settings.section("postgres"))
    groups = {str(key): tiers for key, tiers in stanza_groups(postgres).items()}
    return scheduler.jobs_for(stack, groups, postgres.backup)


@app.command("cron")
def cron_command(stack: str = STACK, cwd: Path = CWD) -> None:
    """The /etc/cron.d lines of the stack's backups and weekly restore drill (for a host's scheduler)."""
    from modules.postgres.backup import scheduler

    for line in scheduler.cron_lines(_jobs(stack, cwd)):
        console.print(line, highlight=False, soft_wrap=True)


@app.command("backup-scheduler")
def scheduler_command(
    config: Path | None = typer.Option(
        None, "--config", help="Run the jobs of this file (the devenv service)."
    ),
    stack: str = STACK,
    install: bool = typer.Option(False, "--install", help="Write the stack's jobs for the devenv scheduler."),
    cwd: Path = CWD,
) -> None:
    """Run due backups and drills by cron expression (UTC), or with --install write the stack's jobs."""
    import sys

    from modules.postgres.backup import scheduler

    if install:
        from devenv.backup_scheduler import BackupSchedulerService

        service = BackupSchedulerService()
        jobs = [{"schedule": j.schedule, "args": j.args} for j in _jobs(stack, cwd)]
        service.install(json.dumps({"cwd": str(cwd.resolve()), "jobs": jobs}, indent=2))
        console.print(f"backup scheduler: {len(jobs)} job(s) of stack {stack} in {service.config_file}")
        return
    if config is None:
        raise ToolkitError("backup-scheduler: give --config FILE, or --stack S --install")
    scheduler.serve(config, str(Path(sys.executable).parent / "penguinmails"))
