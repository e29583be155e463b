"""Versioned SQL migrations of one tier: files, ledger, advisory lock, apply, drift and repair.

Plain functions on a psycopg connection, so the Pulumi resource, the tests and the benchmark share them.

* Files are ``NNNN_<what>.sql``; each one runs in its own transaction as the tier's owner role
  (``SET LOCAL ROLE``), so every object belongs to the owner and a failing file leaves nothing behind.
* The ledger ``pm_meta.schema_migrations`` keeps version, name, SHA-256, applied_at, applied_by and the
  duration. An applied file whose content changed is refused, never re-run.
* A session advisory lock serialises concurrent applies; waiting for it times out with an error that names
  the session holding it.
* Before a file commits, the catalog is linted: a tenant table (any table with a ``tenant_id`` column)
  must have RLS enabled and forced, a restrictive ``tenant_fence`` policy, and keys that include tenant_id.
  A file that breaks the rule is rolled back.
* After each file the RLS state (flags and policies) is recorded in ``pm_meta.rls_baseline``; drift is the
  live catalog against that baseline plus the lint, and :func:`repair_baseline` puts the baseline back.
* After each file the security fingerprint (function definitions, SECURITY DEFINER flags, owners, search_path
  pins, grants, triggers; see :mod:`modules.postgres.catalog`) is recorded in ``pm_meta.security_baseline``;
  a difference is drift too, which cannot be repaired here: it fails the update and names the object.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from modules.errors import ToolkitError, ValidationError
from modules.postgres import catalog

log = logging.getLogger(__name__)

LEDGER_SCHEMA = "pm_meta"
# pg_try_advisory_lock(int4, int4): class 'PM' (0x504D), object 1 = schema migrations of this database.
LOCK_CLASS, LOCK_OBJECT = 0x504D, 1
FILE_RE = re.compile(r"^(\d{4})_([a-z0-9][a-z0-9_]*)\.sql$")
TX_CONTROL_RE = re.compile(
    r"^\s*(BEGIN|COMMIT|ROLLBACK|END|START\s+TRANSACTION)\s*;", re.IGNORECASE | re.MULTILINE
)
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", LEDGER_SCHEMA)
TENANT_COLUMN = catalog.TENANT_COLUMN
TENANT_FUNCTION = f"{catalog.TENANT_FUNCTION_NAME}()"
FENCE_POLICY = "tenant_fence"
COMMANDS = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}
# Files applied before the SECURITY DEFINER rule existed may leave unsafe definer functions behind (an
# applied file is never edited): 0002_jobs.sql of the queue tier, whose three functions 0003_definer_pins.sql
# re-pins. Any other file that adds one is rolled back, and none may be left once every file has run.
DEFINER_GRANDFATHERED_FILES = frozenset({"0002_jobs.sql"})


class MigrationError(ToolkitError):
    """A tier's migrations cannot be applied as asked."""


class MigrationLockTimeout(MigrationError):
    """Another session held the migration lock for longer than the timeout."""


class MigrationChecksumMismatch(MigrationError):
    """An applied file changed (or disappeared) since it was applied."""


class MigrationFailed(MigrationError):
    """A file failed or broke the tenant rules; its transaction was rolled back."""


class SchemaDriftError(MigrationError):
    """The live schema differs from what the migrations made, in a way that cannot be repaired here."""


@dataclass(frozen=True)
class MigrationFile:
    version: int
    name: str
    sha256: str
    sql: str = field(repr=False)


@dataclass(frozen=True)
class LedgerEntry:
    version: int
    name: str
    sha256: str
    applied_at: datetime
    applied_by: str
    duration_ms: int


@dataclass
class Plan:
    """What an apply would do: ``pending`` files, and the reasons it must refuse (changed, orphans)."""

    pending: list[MigrationFile]
    changed: list[str]
    orphans: list[str]

    def problems(self) -> list[str]:
        return self.changed + self.orphans


@dataclass
class ApplyResult:
    applied: list[str]
    repaired: list[str]
    ledger: dict[str, str]
    seconds: float
    warnings: list[str] = field(default_factory=list)


@dataclass
class Inspection:
    """The ledger (file name → sha256), files not applied yet, and every drift found."""

    ledger: dict[str, str]
    pending: list[str]
    drift: list[str]


# ---------------------------------------------------------------------------------------------- files


def normalise(text: str) -> str:
    """Line endings only: a checkout with CRLF must not look like an edited migration."""
    return text.replace("\r\n", "\n")


def sha256_text(text: str) -> str:
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def load_dir(directory: Path) -> list[MigrationFile]:
    """Every ``NNNN_<what>.sql`` of ``directory`` in version order; all naming problems at once."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValidationError(f"migrations in {directory}", ["the folder does not exist"])
    reasons: list[str] = []
    files: list[MigrationFile] = []
    seen: dict[int, str] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = FILE_RE.match(path.name)
        if not match:
            reasons.append(f"{path.name}: the name must be NNNN_<what>.sql (four digits, lower-case words)")
            continue
        version = int(match.group(1))
        if version == 0:
            reasons.append(f"{path.name}: versions start at 0001")
        if version in seen:
            reasons.append(f"{path.name}: version {version:04d} is also used by {seen[version]}")
        seen[version] = path.name
        text = normalise(path.read_text(encoding="utf-8"))
        if not text.strip():
            reasons.append(f"{path.name}: the file is empty")
        if TX_CONTROL_RE.search(text):
            reasons.append(f"{path.name}: remove BEGIN/COMMIT; each file already runs in its own transaction")
        files.append(MigrationFile(version, path.name, sha256_text(text), text))
    if not files and not reasons:
        reasons.append("no NNNN_<what>.sql file found")
    if reasons:
        raise ValidationError(f"migrations in {directory}", reasons)
    return sorted(files, key=lambda f: f.version)


def manifest(files: Iterable[MigrationFile]) -> dict[str, str]:
    """File name → sha256: what the Pulumi resource takes as input and shows in a preview."""
    return {f.name: f.sha256 for f in files}


def plan(files: list[MigrationFile], ledger: dict[int, LedgerEntry]) -> Plan:
    by_version = {f.version: f for f in files}
    changed, orphans = [], []
    for version, entry in sorted(ledger.items()):
        current = by_version.get(version)
        if current is None:
            orphans.append(
                f"{entry.name}: applied on {entry.applied_at:%Y-%m-%d} but the file is gone; restore it"
            )
        elif current.name != entry.name or current.sha256 != entry.sha256:
            changed.append(
                f"{current.name}: applied as {entry.name} with sha256 {entry.sha256[:12]}…, the file now has "
                f"{current.sha256[:12]}…; never edit an applied migration, add a new file"
            )
    pending = [f for f in files if f.version not in ledger]
    return Plan(pending, changed, orphans)


# --------------------------------------------------------------------------------------------- ledger


def ensure_ledger(conn: psycopg.Connection) -> None:
    """Create the ledger schema and tables if missing (run under the lock, as the owner role)."""
    schema = sql.Identifier(LEDGER_SCHEMA)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema))
    conn.execute(
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.schema_migrations (
                   version      integer PRIMARY KEY,
                   name         text NOT NULL,
                   sha256       char(64) NOT NULL,
                   applied_at   timestamptz NOT NULL DEFAULT now(),
                   applied_by   text NOT NULL,
                   duration_ms  integer NOT NULL
               )"""
        ).format(schema)
    )
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.rls_baseline (table_name text PRIMARY KEY, state jsonb NOT NULL)"
        ).format(schema)
    )
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.security_baseline (object text PRIMARY KEY, state jsonb NOT NULL)"
        ).format(schema)
    )


def ledger_exists(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", [f"{LEDGER_SCHEMA}.schema_migrations"]
    ).fetchone()
    return bool(row and row[0])


def read_ledger(conn: psycopg.Connection) -> dict[int, LedgerEntry]:
    if not ledger_exists(conn):
        return {}
    rows = conn.execute(
        sql.SQL(
            "SELECT version, name, sha256, applied_at, applied_by, duration_ms FROM {}.schema_migrations"
        ).format(sql.Identifier(LEDGER_SCHEMA))
    ).fetchall()
    return {row[0]: LedgerEntry(*row) for row in rows}


# ----------------------------------------------------------------------------------------------- lock


def lock_holder(conn: psycopg.Connection) -> str:
    """Who holds the migration lock of this database, in words (or 'unknown' when it was just released)."""
    row = conn.execute(
        """SELECT a.pid, a.usename, a.application_name, a.client_addr::text, a.backend_start, a.state
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s
              AND l.objsubid = 2
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            LIMIT 1""",
        [LOCK_CLASS, LOCK_OBJECT],
    ).fetchone()
    if row is None:
        return "unknown (released meanwhile)"
    pid, user, app, addr, started, state = row
    return (
        f"pid {pid}, user {user}, application {app or '-'}, from {addr or 'local socket'}, "
        f"connected since {started:%Y-%m-%d %H:%M:%S %Z}, {state or 'state unknown'}"
    )


def acquire_lock(conn: psycopg.Connection, timeout: float, poll: float = 0.1) -> None:
    """Take the session-level migration lock (polled outside any transaction); time out naming the holder."""
    deadline = time.monotonic() + timeout
    while True:
        got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_CLASS, LOCK_OBJECT]).fetchone()
        if got and got[0]:
            return
        if time.monotonic() >= deadline:
            database = conn.info.dbname
            raise MigrationLockTimeout(
                f"database {database}: the migration lock was not free within {timeout:g} s; it is held by "
                f"{lock_holder(conn)}"
            )
        time.sleep(poll)


def release_lock(conn: psycopg.Connection) -> None:
    if not conn.closed:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_CLASS, LOCK_OBJECT])


# ------------------------------------------------------------------------------------------- catalog


def _tenant_tables(conn: psycopg.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        """SELECT c.oid, format('%%I.%%I', n.nspname, c.relname), c.relispartition, c.relrowsecurity,
                  c.relforcerowsecurity, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attnum
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = %s AND NOT a.attisdropped
            WHERE c.relkind IN ('r', 'p') AND n.nspname <> ALL (%s) AND n.nspname NOT LIKE 'pg\\_%%'
            ORDER BY 2""",
        [TENANT_COLUMN, list(SYSTEM_SCHEMAS)],
    ).fetchall()
    keys = ("oid", "name", "partition", "enabled", "forced", "type", "not_null", "attnum")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _policies(conn: psycopg.Connection, oids: list[int]) -> dict[int, dict[str, dict[str, Any]]]:
    rows = conn.execute(
        """SELECT p.polrelid, p.polname, p.polpermissive, p.polcmd::text,
                  pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid),
                  ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END
                          FROM unnest(p.polroles) AS r ORDER BY 1)
             FROM pg_policy p WHERE p.polrelid = ANY (%s)""",
        [oids],
    ).fetchall()
    found: dict[int, dict[str, dict[str, Any]]] = {}
    for relid, name, permissive, cmd, qual, check, roles in rows:
        found.setdefault(relid, {})[name] = {
            "permissive": permissive,
            "command": cmd,
            "roles": list(roles),
            "using": qual,
            "check": check,
        }
    return found


def fence_policy_problem(policy: dict[str, Any], table: str) -> str | None:
    """Why a policy is not the tenant fence of ``table`` (restrictive, FOR ALL, TO PUBLIC, both expressions
    exactly the fence, see :func:`catalog.fence_problem`), or None. Expressions must be read with
    :func:`catalog.pinned_search_path`."""
    if policy["permissive"]:
        return "it is permissive (the fence must be RESTRICTIVE)"
    if policy["command"] != "*":
        return f"it is FOR {COMMANDS.get(policy['command'], policy['command'])}, not FOR ALL"
    if policy["roles"] != ["public"]:
        return f"it applies to {', '.join(policy['roles'])}, not to PUBLIC"
    for clause, key in (("USING", "using"), ("WITH CHECK", "check")):
        problem = catalog.fence_problem(policy.get(key), table)
        if problem:
            return f"{clause} {problem}"
    return None


def tenant_table_problems(conn: psycopg.Connection) -> list[str]:
    """Every way a tenant table breaks the rules (RLS enabled + forced, a fence, tenant_id in every key)."""
    tables = _tenant_tables(conn)
    if not tables:
        return []
    by_oid = {t["oid"]: t for t in tables}
    with catalog.pinned_search_path(conn):  # so the policy text qualifies every function it calls
        policies = _policies(conn, list(by_oid))
    problems: list[str] = []
    for table in tables:
        name = table["name"]
        if table["type"] != "uuid" or not table["not_null"]:
            problems.append(
                f"{name}: tenant_id must be uuid NOT NULL (it is {table['type']}"
                f"{'' if table['not_null'] else ', nullable'})"
            )
        if not table["enabled"]:
            problems.append(f"{name}: row level security is not enabled")
        if not table["forced"]:
            problems.append(f"{name}: row level security is not forced (the owner would bypass it)")
        found = policies.get(table["oid"], {})
        if not any(fence_policy_problem(p, name) is None for p in found.values()):
            why = fence_policy_problem(found[FENCE_POLICY], name) if FENCE_POLICY in found else None
            problems.append(
                f"{name}: no restrictive FOR ALL policy checking tenant_id against "
                f"app_private.{TENANT_FUNCTION} in USING and WITH CHECK"
                + (f" ({FENCE_POLICY}: {why})" if why else "")
            )
    # Keys: the primary key and every unique index include tenant_id; a reference to another tenant table
    # maps tenant_id to tenant_id, so a row can never point at another tenant's row.
    rows = conn.execute(
        """SELECT i.indrelid, ic.relname, i.indisprimary, i.indkey::int2[]
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
            WHERE i.indrelid = ANY (%s) AND i.indisunique""",
        [list(by_oid)],
    ).fetchall()
    has_primary = {relid for relid, _name, primary, _keys in rows if primary}
    for relid, index, _primary, keys in rows:
        table = by_oid[relid]
        if table["attnum"] not in keys:
            problems.append(f"{table['name']}: unique index {index} does not include tenant_id")
    for table in tables:
        if table["oid"] not in has_primary:
            problems.append(f"{table['name']}: no primary key")
    fks = conn.execute(
        """SELECT conrelid, conname, confrelid, conkey, confkey FROM pg_constraint
            WHERE contype = 'f' AND conrelid = ANY (%s) AND confrelid = ANY (%s)""",
        [list(by_oid), list(by_oid)],
    ).fetchall()
    for relid, constraint, frelid, keys, fkeys in fks:
        local, remote = by_oid[relid]["attnum"], by_oid[frelid]["attnum"]
        if (local, remote) not in zip(keys, fkeys, strict=True):
            problems.append(
                f"{by_oid[relid]['name']}: foreign key {constraint} to {by_oid[frelid]['name']} does not "
                "match tenant_id to tenant_id"
            )
    return sorted(set(problems))


def rls_coverage(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    """Per tenant table (a ``tenant_id`` column, partitions left out): RLS enabled and forced, its policies,
    and whether one of them is the exact tenant fence. Kept in the state so an audit reads it offline."""
    tables = [t for t in _tenant_tables(conn) if not t["partition"]]
    with catalog.pinned_search_path(conn):
        policies = _policies(conn, [t["oid"] for t in tables])
    return {
        t["name"]: {
            "enabled": bool(t["enabled"]),
            "forced": bool(t["forced"]),
            "policies": sorted(policies.get(t["oid"], {})),
            "fenced": any(
                fence_policy_problem(p, t["name"]) is None for p in policies.get(t["oid"], {}).values()
            ),
        }
        for t in tables
    }


def rls_snapshot(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    """RLS flags and policies of every non-partition table that has RLS, policies, or a tenant_id column."""
    rows = conn.execute(
        """SELECT c.oid, format('%%I.%%I', n.nspname, c.relname), c.relrowsecurity, c.relforcerowsecurity
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND n.nspname <> ALL (%s) AND n.nspname NOT LIKE 'pg\\_%%'
              AND (c.relrowsecurity OR EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)
                   OR EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = %s
                              AND NOT a.attisdropped))""",
        [list(SYSTEM_SCHEMAS), TENANT_COLUMN],
    ).fetchall()
    policies = _policies(conn, [row[0] for row in rows])
    return {
        name: {"enabled": enabled, "forced": forced, "policies": policies.get(oid, {})}
        for oid, name, enabled, forced in rows
    }


def save_baseline(conn: psycopg.Connection) -> None:
    table = sql.SQL("{}.rls_baseline").format(sql.Identifier(LEDGER_SCHEMA))
    conn.execute(sql.SQL("DELETE FROM {}").format(table))
    snapshot = rls_snapshot(conn)
    if snapshot:
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {} (table_name, state) VALUES (%s, %s)").format(table),
                [(name, Jsonb(state)) for name, state in snapshot.items()],
            )


def read_baseline(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    if conn.execute("SELECT to_regclass(%s) IS NULL", [f"{LEDGER_SCHEMA}.rls_baseline"]).fetchone()[0]:
        return {}
    rows = conn.execute(
        sql.SQL("SELECT table_name, state FROM {}.rls_baseline").format(sql.Identifier(LEDGER_SCHEMA))
    ).fetchall()
    return dict(rows)


def baseline_problems(conn: psycopg.Connection) -> list[str]:
    """The live RLS state against what the migrations left (flags, missing, changed or extra policies)."""
    expected, live = read_baseline(conn), rls_snapshot(conn)
    problems: list[str] = []
    for name, want in sorted(expected.items()):
        have = live.get(name)
        if have is None:
            problems.append(f"{name}: the table is gone (it was under row level security)")
            continue
        if want["enabled"] and not have["enabled"]:
            problems.append(f"{name}: row level security is not enabled")
        if want["forced"] and not have["forced"]:
            problems.append(f"{name}: row level security is not forced (the owner would bypass it)")
        for policy, spec in sorted(want["policies"].items()):
            if policy not in have["policies"]:
                problems.append(f"{name}: policy {policy} is missing")
            elif have["policies"][policy] != spec:
                problems.append(f"{name}: policy {policy} was changed outside the migrations")
        for policy in sorted(set(have["policies"]) - set(want["policies"])):
            problems.append(f"{name}: policy {policy} is not from the migrations")
    return problems


def _ignored_grantees(conn: psycopg.Connection) -> set[str]:
    """The tier's app and readonly roles, named after the ledger schema's owner (the migrator)."""
    row = conn.execute(
        "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s", [LEDGER_SCHEMA]
    ).fetchone()
    return catalog.managed_role_grantees(row[0]) if row else set()


def security_snapshot(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    return catalog.security_snapshot(conn, _ignored_grantees(conn))


def save_security_baseline(conn: psycopg.Connection) -> None:
    table = sql.SQL("{}.security_baseline").format(sql.Identifier(LEDGER_SCHEMA))
    conn.execute(sql.SQL("DELETE FROM {}").format(table))
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {} (object, state) VALUES (%s, %s)").format(table),
            [(label, Jsonb(state)) for label, state in security_snapshot(conn).items()],
        )


def read_security_baseline(conn: psycopg.Connection) -> dict[str, dict[str, Any]] | None:
    """The recorded fingerprint, or None when none was recorded (a ledger from before the fingerprint)."""
    if conn.execute("SELECT to_regclass(%s) IS NULL", [f"{LEDGER_SCHEMA}.security_baseline"]).fetchone()[0]:
        return None
    rows = conn.execute(
        sql.SQL("SELECT object, state FROM {}.security_baseline").format(sql.Identifier(LEDGER_SCHEMA))
    ).fetchall()
    return dict(rows)


def security_baseline_problems(conn: psycopg.Connection) -> list[str]:
    """Functions, definer flags, owners, search_path pins, grants and triggers against what migrations left."""
    if not ledger_exists(conn):
        return []
    expected = read_security_baseline(conn)
    if expected is None:
        return [
            f"{LEDGER_SCHEMA}.security_baseline: no security fingerprint recorded yet; the next apply records it"
        ]
    return catalog.security_problems(expected, security_snapshot(conn)) + catalog.partition_grant_problems(
        conn
    )


def _create_policy(table: str, name: str, spec: dict[str, Any]) -> sql.Composed:
    roles = sql.SQL(", ").join(
        sql.SQL("PUBLIC") if r == "public" else sql.Identifier(r) for r in spec["roles"] or ["public"]
    )
    parts = [
        sql.SQL("CREATE POLICY {} ON {} AS {} FOR {} TO {}").format(
            sql.Identifier(name),
            sql.SQL(table),  # already quoted by format('%I.%I') in the catalog query
            sql.SQL("PERMISSIVE" if spec["permissive"] else "RESTRICTIVE"),
            sql.SQL(COMMANDS[spec["command"]]),
            roles,
        )
    ]
    if spec.get("using"):
        parts.append(sql.SQL("USING ({})").format(sql.SQL(spec["using"])))
    if spec.get("check"):
        parts.append(sql.SQL("WITH CHECK ({})").format(sql.SQL(spec["check"])))
    return sql.SQL(" ").join(parts)


def repair_baseline(conn: psycopg.Connection) -> list[str]:
    """Put RLS flags and policies back as the migrations left them; returns what was done."""
    expected, live = read_baseline(conn), rls_snapshot(conn)
    actions: list[str] = []
    for name, want in sorted(expected.items()):
        have = live.get(name)
        if have is None:
            continue  # a dropped table cannot be repaired here; it stays in the drift report
        table = sql.SQL(name)
        if want["enabled"] and not have["enabled"]:
            conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(table))
            actions.append(f"{name}: enabled row level security")
        if want["forced"] and not have["forced"]:
            conn.execute(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(table))
            actions.append(f"{name}: forced row level security")
        for policy in sorted(set(have["policies"]) - set(want["policies"])):
            conn.execute(sql.SQL("DROP POLICY {} ON {}").format(sql.Identifier(policy), table))
            actions.append(f"{name}: dropped policy {policy}")
        for policy, spec in sorted(want["policies"].items()):
            if have["policies"].get(policy) == spec:
                continue
            if policy in have["policies"]:
                conn.execute(sql.SQL("DROP POLICY {} ON {}").format(sql.Identifier(policy), table))
            conn.execute(_create_policy(name, policy, spec))
            actions.append(f"{name}: restored policy {policy}")
    return actions


# ---------------------------------------------------------------------------------------------- apply


def _as_owner(conn: psycopg.Connection, owner: str, lock_timeout: str = "30s") -> None:
    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
    conn.execute("SELECT set_config('lock_timeout', %s, true)", [lock_timeout])


def _failure(name: str, exc: psycopg.Error) -> MigrationFailed:
    diag = exc.diag
    where = f" (at {diag.context.strip()})" if diag.context else ""
    return MigrationFailed(
        f"{name} failed and was rolled back: [{exc.sqlstate}] "
        f"{diag.message_primary or str(exc).strip()}{where}"
    )


def inspect(conn: psycopg.Connection, files: list[MigrationFile]) -> Inspection:
    """Read-only: the ledger against the files, the tenant-table lint and the RLS baseline."""
    ledger = read_ledger(conn)
    planned = plan(files, ledger)
    drift = (
        planned.problems()
        + sorted(set(tenant_table_problems(conn) + baseline_problems(conn)))
        + security_baseline_problems(conn)
    )
    return Inspection(
        ledger={entry.name: entry.sha256 for entry in sorted(ledger.values(), key=lambda e: e.version)},
        pending=[f.name for f in planned.pending],
        drift=drift,
    )


def apply(
    conn: psycopg.Connection,
    files: list[MigrationFile],
    owner: str,
    actor: str = "",
    lock_timeout: float = 30.0,
    statement_lock_timeout: str = "30s",
    repair: bool = True,
) -> ApplyResult:
    """Apply pending files under the lock, one transaction each; then repair RLS drift (if asked).

    ``conn`` must be in autocommit mode (this function opens and ends the transactions itself).
    """
    if not conn.autocommit:
        raise MigrationError("apply() needs an autocommit connection; it runs one transaction per file")
    started = time.monotonic()
    acquire_lock(conn, lock_timeout)
    try:
        unfingerprinted = read_security_baseline(conn) is None
        with conn.transaction():
            _as_owner(conn, owner, statement_lock_timeout)
            ensure_ledger(conn)
        ledger = read_ledger(conn)
        planned = plan(files, ledger)
        if planned.problems():
            raise MigrationChecksumMismatch(
                f"database {conn.info.dbname}: applied migrations do not match the files:\n  - "
                + "\n  - ".join(planned.problems())
            )
        session_user = conn.execute("SELECT session_user").fetchone()[0]
        applied_by = f"{session_user} via {actor}" if actor else session_user
        applied: list[str] = []
        warnings: list[str] = []
        unsafe_before = catalog.definer_problems(conn) if planned.pending else []
        for migration in planned.pending:
            began = time.monotonic()
            try:
                with conn.transaction():
                    _as_owner(conn, owner, statement_lock_timeout)
                    conn.execute(migration.sql)
                    problems = tenant_table_problems(conn)
                    if problems:
                        raise MigrationFailed(
                            f"{migration.name} was rolled back: it leaves tenant tables unprotected:\n  - "
                            + "\n  - ".join(problems)
                        )
                    definers = catalog.definer_problems(conn)
                    introduced = [p for p in definers if p not in unsafe_before]
                    if introduced and migration.name not in DEFINER_GRANDFATHERED_FILES:
                        raise MigrationFailed(
                            f"{migration.name} was rolled back: its SECURITY DEFINER functions are unsafe:\n  - "
                            + "\n  - ".join(introduced)
                        )
                    unsafe_before = definers
                    save_baseline(conn)
                    save_security_baseline(conn)
                    conn.execute(
                        sql.SQL(
                            "INSERT INTO {}.schema_migrations"
                            " (version, name, sha256, applied_by, duration_ms) VALUES (%s, %s, %s, %s, %s)"
                        ).format(sql.Identifier(LEDGER_SCHEMA)),
                        [
                            migration.version,
                            migration.name,
                            migration.sha256,
                            applied_by,
                            int((time.monotonic() - began) * 1000),
                        ],
                    )
            except psycopg.Error as exc:
                raise _failure(migration.name, exc) from None
            applied.append(migration.name)
        if applied and unsafe_before:
            raise MigrationFailed(
                f"database {conn.info.dbname}: after every migration, SECURITY DEFINER functions are still "
                "unsafe (add a migration that fixes them):\n  - " + "\n  - ".join(unsafe_before)
            )
        if unfingerprinted and not applied:
            # A ledger from before the fingerprint existed: record the state as it is now, once.
            with conn.transaction():
                _as_owner(conn, owner, statement_lock_timeout)
                save_security_baseline(conn)
        repaired: list[str] = []
        if repair:
            with conn.transaction():
                _as_owner(conn, owner, statement_lock_timeout)
                repaired = repair_baseline(conn)
        remaining = sorted(set(tenant_table_problems(conn) + baseline_problems(conn)))
        remaining += security_baseline_problems(conn)
        if remaining:
            raise SchemaDriftError(
                f"database {conn.info.dbname}: the schema differs from the migrations in ways that cannot be "
                "repaired automatically:\n  - " + "\n  - ".join(remaining)
            )
        ledger_names = {e.name: e.sha256 for e in sorted(read_ledger(conn).values(), key=lambda e: e.version)}
        return ApplyResult(applied, repaired, ledger_names, time.monotonic() - started, warnings)
    finally:
        release_lock(conn)
