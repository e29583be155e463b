"""Restore a stanza's backup into a new cluster (PITR by time or restore point), and the restore drill.

A restore never goes over a live cluster: the target folder must be absent or empty and no server may run
from it; only ``in_place=True`` (the CLI's ``--in-place --yes``) restores into the source cluster's own
folder, after stopping it. A restored cluster never archives (``--archive-mode=off``): its new timeline must
not reach the source's repository.

The drill (:func:`drill`): in one transaction on the source, lock the tier's managed tables IN SHARE MODE,
count their rows, read the migration ledger and create a restore point; switch WAL and wait until it is
archived; restore the latest backup up to that point into a scratch cluster on a free port; compare.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import sql

from modules.postgres.backup import pgbackrest as pb
from modules.postgres.client import PostgresError, ServerTarget, connect
from modules.postgres.migrations import LEDGER_SCHEMA

PG_BIN = Path(os.environ.get("PENGUINMAILS_PG_BIN", "/usr/lib/postgresql/15/bin"))
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", LEDGER_SCHEMA)


class RestoreError(pb.BackupError):
    """A restore was refused or failed."""


class DrillFailed(pb.BackupError):
    """The restored copy differs from the source at the restore point (or could not be made)."""

    exit_code = 4


@dataclass
class Snapshot:
    counts: dict[str, int]
    ledger: list[tuple[int, str, str]]
    point: str = ""


@dataclass
class DrillReport:
    source: Snapshot
    restored: Snapshot | None = None
    phases: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def managed_tables(conn) -> list[tuple[str, str]]:
    """Tables of the tier's own schemas (partitioned parents count their partitions' rows)."""
    rows = conn.execute(
        """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname <> ALL (%s)
             AND n.nspname NOT LIKE 'pg\\_%%' ORDER BY 1, 2""",
        [list(SYSTEM_SCHEMAS)],
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def _ledger(conn) -> list[tuple[int, str, str]]:
    if conn.execute("SELECT to_regclass(%s) IS NULL", [f"{LEDGER_SCHEMA}.schema_migrations"]).fetchone()[0]:
        return []
    query = sql.SQL("SELECT version, name, sha256 FROM {} ORDER BY 1").format(
        sql.Identifier(LEDGER_SCHEMA, "schema_migrations")
    )
    return [(int(r[0]), r[1], r[2]) for r in conn.execute(query)]


def read_snapshot(conn, lock: bool = False) -> Snapshot:
    tables = managed_tables(conn)
    if lock and tables:
        names = sql.SQL(", ").join(sql.Identifier(*table) for table in tables)
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(names))
    counts = {
        f"{schema}.{name}": conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))
        ).fetchone()[0]
        for schema, name in tables
    }
    return Snapshot(counts, _ledger(conn))


def source_snapshot(target: ServerTarget, database: str, point: str) -> Snapshot:
    """Counts and ledger with writers held off, and the restore point inside that same transaction."""
    with connect(target, database, autocommit=False, application_name="penguinmails-drill") as conn:
        snap = read_snapshot(conn, lock=True)
        conn.execute("SELECT pg_create_restore_point(%s)", [point])
        conn.commit()
    snap.point = point
    return snap


def switch_and_wait(target: ServerTarget, timeout: float = 300) -> str:
    """Close the current WAL segment and wait until the archiver has pushed it."""
    with connect(target, application_name="penguinmails-drill") as conn:
        wal = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = conn.execute("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").fetchone()[0]
            if last >= wal:  # same timeline here: names sort as they were written
                return wal
            time.sleep(0.2)
    raise RestoreError(
        f"WAL {wal} was not archived within {timeout:.0f} s: see `pgbackrest check` and the server log"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_postgres(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return subprocess.run(
        [runuser, "-u", pb.OS_USER, "--", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
        check=False,
    )


def live_cluster(data_dir: Path) -> bool:
    """A server runs from ``data_dir`` (its postmaster.pid names a live process)."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, 0)
        return True
    except (OSError, ValueError, IndexError):
        return False


@dataclass
class Restored:
    """A restored cluster on this machine; :meth:`stop` ends it, :meth:`discard` removes its files."""

    data_dir: Path
    port: int
    target: ServerTarget

    def stop(self) -> None:
        if live_cluster(self.data_dir):
            _as_postgres(
                str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", timeout=60
            )

    def discard(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        (self.data_dir.parent / f"{self.data_dir.name}.log").unlink(missing_ok=True)


def check_target(data_dir: Path, source: pb.Cluster, in_place: bool) -> None:
    """Refuse a live cluster or a folder with files, unless it is an in-place restore."""
    if in_place:
        return
    if data_dir.resolve() == source.data_dir.resolve() or live_cluster(data_dir):
        raise RestoreError(
            f"restore: {data_dir} is a live cluster; restore into a new folder, or pass --in-place --yes to "
            "replace it (its current data is lost)"
        )
    if data_dir.exists() and any(data_dir.iterdir()):
        raise RestoreError(f"restore: {data_dir} is not empty; choose a new folder (or remove it first)")


def restore(
    source: pb.Cluster,
    data_dir: Path,
    *,
    port: int | None = None,
    to_time: str | None = None,
    to_point: str | None = None,
    in_place: bool = False,
    start: bool = True,
    timeout: float = 1800,
) -> Restored:
    """Restore the latest backup (plus WAL up to ``to_time``/``to_point``, else all of it) into ``data_dir``
    and, with ``start``, run it on ``port`` until recovery has finished and it is promoted."""
    check_target(data_dir, source, in_place)
    account = pwd.getpwnam(pb.OS_USER)
    args = ["restore", f"--pg1-path={data_dir}", "--archive-mode=off"]
    if to_point:
        args += ["--type=name", f"--target={to_point}", "--target-action=promote"]
    elif to_time:
        args += ["--type=time", f"--target={to_time}", "--target-action=promote"]
    if in_place:
        if live_cluster(data_dir):
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop", timeout=120)
        args.append("--delta")
    else:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(data_dir, account.pw_uid, account.pw_gid)
    pb.run(source, *args, timeout=timeout)
    port = port or (source.port if in_place else free_port())
    restored = Restored(data_dir, port, ServerTarget("127.0.0.1", port, source.user, source.password))
    if not in_place:
        # Read last: its own port, no preloaded pg_cron (no job may change the copy), no archiving.
        with (data_dir / "postgresql.auto.conf").open("a") as auto:
            auto.write(f"\n# penguinmails restore\nport = {port}\nshared_preload_libraries = ''\n")
        (data_dir / pb.CONF_DIR / pb.ARCHIVE_CONF).unlink(missing_ok=True)
    if start:
        log = data_dir.parent / f"{data_dir.name}.log"
        log.touch()
        os.chown(log, account.pw_uid, account.pw_gid)
        result = _as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(data_dir), "-l", str(log), "-w", "-t", str(int(timeout)), "start",
            timeout=timeout + 30,
        )  # fmt: skip
        if result.returncode != 0:
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            raise RestoreError(f"restore: the restored cluster in {data_dir} did not start: {tail}")
        wait_promoted(restored.target, timeout)
    return restored


def wait_promoted(target: ServerTarget, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with connect(target, application_name="penguinmails-restore") as conn:
                if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    return
        except PostgresError:
            pass
        time.sleep(0.3)
    raise RestoreError(
        f"restore: the cluster on port {target.port} was still recovering after {timeout:.0f} s"
    )


def compare(source: Snapshot, restored: Snapshot) -> list[str]:
    problems = []
    for table in sorted(set(source.counts) | set(restored.counts)):
        want, have = source.counts.get(table), restored.counts.get(table)
        if want != have:
            problems.append(f"{table}: {have} rows restored, {want} at the restore point")
    if source.ledger != restored.ledger:
        problems.append(
            f"migration ledger differs: source {[v for v, *_ in source.ledger]}, "
            f"restored {[v for v, *_ in restored.ledger]}"
        )
    return problems


def drill(
    source: pb.Cluster,
    database: str,
    *,
    scratch_root: Path | None = None,
    on_phase: Callable[[str, float], None] | None = None,
) -> DrillReport:
    """Restore the latest backup to a fresh restore point in a scratch cluster and compare with the source."""
    phases: dict[str, float] = {}

    def phase(name: str, started: float) -> None:
        phases[name] = time.monotonic() - started
        if on_phase:
            on_phase(name, phases[name])

    point = f"penguinmails-drill-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    started = time.monotonic()
    snap = source_snapshot(source.target(), database, point)
    phase("snapshot", started)
    report = DrillReport(snap, phases=phases)
    started = time.monotonic()
    switch_and_wait(source.target())
    phase("archive", started)
    scratch = (scratch_root or source.data_dir.parent) / f"drill-{secrets.token_hex(4)}"
    restored: Restored | None = None
    try:
        started = time.monotonic()
        try:
            restored = restore(source, scratch, to_point=point)
        except pb.BackupError as exc:
            report.problems.append(f"restore failed: {exc.message}")
            restored = Restored(scratch, 0, source.target())
            return report
        phase("restore", started)
        started = time.monotonic()
        with connect(restored.target, database, application_name="penguinmails-drill") as conn:
            report.restored = read_snapshot(conn)
        report.problems += compare(snap, report.restored)
        phase("compare", started)
    finally:
        if restored is not None:
            restored.discard()
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    phases["total"] = sum(phases.values())
    return report
