"""PgBouncer in front of a tier: the auth lookup function, the pooler's database entry, and their resource.

PgBouncer (transaction mode) checks a client's login with ``auth_query`` against
``pgbouncer.user_lookup(text)`` in the database the client asks for, run as the auth role. The function is
SECURITY DEFINER (owned by the superuser that creates it, since only a superuser reads ``pg_shadow``), pinned to
``pg_catalog``, and executable by the auth role alone. It answers only for login roles whose name starts with
the tier's own prefix (``<prefix>_<tier>_``), that may CONNECT to this database, hold a SCRAM verifier and are
neither superuser, replication, BYPASSRLS nor the database owner (the migrator uses its direct URL): for
anything else it returns no row, so PgBouncer refuses the login.

The pooler's entry ``<database> = host=… port=… dbname=… pool_size=N max_db_connections=N+2`` goes into its
``%include``-d databases file (one writer at a time, under a lock), applied with ``RELOAD`` on its admin
console. Only a local (devenv) tier is pooled so far: the pooler's address and credentials are the devenv's
``PENGUINMAILS_PGBOUNCER_*`` variables.

Clients of a transaction pooler must not rely on session state: the tenant setting is transaction-local
(:func:`modules.postgres.client.tenant_transaction`), and psycopg must not prepare statements
(``prepare_threshold=None``; PgBouncer 1.18 does not track them).
"""

from __future__ import annotations

import fcntl
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pulumi
import pulumi.dynamic as dynamic
from psycopg import sql

from modules.config.model import TIERS
from modules.errors import ToolkitError
from modules.postgres import admin
from modules.postgres.client import PostgresError, ServerTarget, connect, run, server_target
from modules.providers import ProviderSettings, redact

# Server connections per (role, database) pool and at most for the database, by tier (issue 13).
POOL_SIZES = {"oltp": 80, "content": 40, "queue": 60, "analytics": 40}
SCHEMA = "pgbouncer"
FUNCTION = "user_lookup"
ENV_HOST = "PENGUINMAILS_PGBOUNCER_HOST"
ENV_PORT = "PENGUINMAILS_PGBOUNCER_PORT"
ENV_ADMIN_USER = "PENGUINMAILS_PGBOUNCER_ADMIN_USER"
ENV_ADMIN_PASSWORD = "PENGUINMAILS_PGBOUNCER_ADMIN_PASSWORD"  # noqa: S105 - a variable name
ENV_AUTH_USER = "PENGUINMAILS_PGBOUNCER_AUTH_USER"
ENV_CA_FILE = "PENGUINMAILS_PGBOUNCER_CA_FILE"
ENV_DATABASES_FILE = "PENGUINMAILS_PGBOUNCER_DATABASES_FILE"
PREFIX_RE = re.compile(r"^[a-z][a-z0-9_]{0,50}_$")


class PoolerError(ToolkitError):
    """PgBouncer could not be reached or refused a console command."""


@dataclass(frozen=True)
class PoolerTarget:
    """Where the pooler listens and who may use its admin console; the password never shows in ``repr``."""

    host: str
    port: int
    admin_user: str
    admin_password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    auth_user: str = "pgbouncer_auth"
    databases_file: Path | None = None

    @property
    def label(self) -> str:
        return f"PgBouncer {self.host}:{self.port}"


def pooler_target(settings: ProviderSettings) -> PoolerTarget:
    """The devenv's pooler (a dev stack reads ``PENGUINMAILS_PGBOUNCER_*``); none is known elsewhere yet."""
    host = settings.dev_env(ENV_HOST)
    if host is None:
        raise PoolerError(
            "PgBouncer: no pooler is known for this stack (only the devenv's, on a dev stack); start it with "
            "`python -m devenv start pgbouncer` and source tools/env.sh, or set postgres.<tier>.pooling: false"
        )
    ca_file = settings.dev_env(ENV_CA_FILE)
    databases = settings.dev_env(ENV_DATABASES_FILE)
    return PoolerTarget(
        host=host,
        port=int(settings.dev_env(ENV_PORT) or 6433),
        admin_user=settings.dev_env(ENV_ADMIN_USER) or "pgbouncer_admin",
        admin_password=settings.dev_env(ENV_ADMIN_PASSWORD),
        ca_file=Path(ca_file) if ca_file else None,
        auth_user=settings.dev_env(ENV_AUTH_USER) or "pgbouncer_auth",
        databases_file=Path(databases) if databases else None,
    )


def console(target: PoolerTarget) -> psycopg.Connection:
    """The admin console (virtual database ``pgbouncer``), over TLS verified by the pooler's CA."""
    try:
        return psycopg.connect(
            host=target.host,
            port=target.port,
            user=target.admin_user,
            password=target.admin_password or "",
            dbname="pgbouncer",
            sslmode="verify-full" if target.ca_file else "require",
            sslrootcert=str(target.ca_file) if target.ca_file else None,
            autocommit=True,
            prepare_threshold=None,
            connect_timeout=10,
        )
    except psycopg.Error as exc:
        detail = redact(str(exc).strip().splitlines()[-1] if str(exc).strip() else "", target.admin_password)
        raise PoolerError(
            f"{target.label}: cannot reach the admin console ({detail}); is it running? "
            "(python -m devenv status; start it with python -m devenv start pgbouncer)"
        ) from None


def reload(target: PoolerTarget) -> None:
    with console(target) as conn:
        conn.execute("RELOAD")


def show_databases(target: PoolerTarget) -> dict[str, dict[str, Any]]:
    """``SHOW DATABASES`` keyed by name: host, port, database, pool_size, max_connections, …"""
    with console(target) as conn:
        cur = conn.execute("SHOW DATABASES")
        names = [c.name for c in cur.description or []]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}


# ----------------------------------------------------------------------------------------- databases file


# Server connections a database may have beyond its pool: PgBouncer's auth_query connection counts against
# max_db_connections, and without room for it a login evicts a pooled server connection (or waits for one).
AUTH_HEADROOM = 2


def entry_line(alias: str, host: str, port: int, database: str, pool_size: int) -> str:
    return (
        f"{alias} = host={host} port={port} dbname={database} pool_size={pool_size} "
        f"max_db_connections={pool_size + AUTH_HEADROOM}\n"
    )


@contextmanager
def _locked(path: Path):
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_entry(path: Path, alias: str, line: str | None) -> None:
    """Put (or, with ``line`` None, remove) ``alias``'s line; the file is replaced whole, never half-written."""
    with _locked(path):
        lines = path.read_text().splitlines(keepends=True) if path.exists() else []
        kept = [item for item in lines if item.split("=", 1)[0].strip() != alias]
        if line is not None:
            kept.append(line)
        stat = path.stat() if path.exists() else None
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept))
        if stat is not None:
            os.chown(tmp, stat.st_uid, stat.st_gid)
        tmp.chmod(0o644)
        os.replace(tmp, path)


def set_entry(target: PoolerTarget, alias: str, line: str | None) -> None:
    if target.databases_file is None:
        raise PoolerError(f"{target.label}: its databases file is unknown (set {ENV_DATABASES_FILE})")
    _write_entry(target.databases_file, alias, line)
    reload(target)


# ---------------------------------------------------------------------------------------- lookup function


def lookup_body(role_prefix: str) -> str:
    """The function's SQL body: the roles of ``role_prefix…`` that may log in through the pooler here."""
    return (
        sql.SQL(
            """SELECT s.usename, s.passwd
             FROM pg_catalog.pg_shadow s
             JOIN pg_catalog.pg_roles r ON r.rolname = s.usename
             JOIN pg_catalog.pg_database d ON d.datname = pg_catalog.current_database()
            WHERE s.usename = p_usename
              AND pg_catalog.left(s.usename, {length}) = {prefix}
              AND r.rolcanlogin AND NOT r.rolsuper AND NOT r.rolreplication AND NOT r.rolbypassrls
              AND r.oid <> d.datdba
              AND s.passwd LIKE 'SCRAM-SHA-256$%'
              AND (s.valuntil IS NULL OR s.valuntil > pg_catalog.now())
              AND pg_catalog.has_database_privilege(r.oid, d.oid, 'CONNECT')"""
        )
        .format(length=sql.Literal(len(role_prefix)), prefix=sql.Literal(role_prefix))
        .as_string()
    )


def lookup_function_sql(role_prefix: str, auth_user: str) -> list[sql.Composed]:
    """The statements that (re)install ``pgbouncer.user_lookup`` for roles named ``role_prefix…``."""
    fn = sql.Identifier(SCHEMA, FUNCTION)
    auth = sql.Identifier(auth_user)
    # The schema is made afresh each time (one transaction): whatever else was put in it goes too.
    return [
        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)),
        sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)),
        sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(SCHEMA)),
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}(p_usename text) RETURNS TABLE (usename name, passwd text) "
            "LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS {}"
        ).format(fn, sql.Literal(lookup_body(role_prefix))),
        sql.SQL("COMMENT ON FUNCTION {}(text) IS {}").format(
            fn, sql.Literal(f"PgBouncer auth_query: SCRAM verifiers of login roles {role_prefix}* only")
        ),
        sql.SQL("REVOKE ALL ON FUNCTION {}(text) FROM PUBLIC").format(fn),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(SCHEMA), auth),
        sql.SQL("GRANT EXECUTE ON FUNCTION {}(text) TO {}").format(fn, auth),
    ]


def install_lookup(conn: psycopg.Connection, role_prefix: str, auth_user: str) -> None:
    """Install the lookup function in ``conn``'s database as the connected superuser, in one transaction."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(20557, 1)")  # concurrent installs: one at a time
        for statement in lookup_function_sql(role_prefix, auth_user):
            conn.execute(statement)


def lookup_problems(conn: psycopg.Connection, role_prefix: str, auth_user: str) -> list[str]:
    """How the installed function differs from what :func:`install_lookup` makes (empty: no drift)."""
    row = conn.execute(
        """SELECT p.prosecdef, p.proconfig, o.rolsuper, p.prosrc,
                  pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE'),
                  pg_catalog.has_function_privilege(%s, p.oid, 'EXECUTE'),
                  ARRAY(SELECT a.grantee::regrole::text FROM pg_catalog.aclexplode(p.proacl) a
                         WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner ORDER BY 1)
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_roles o ON o.oid = p.proowner
            WHERE p.oid = to_regprocedure('pgbouncer.user_lookup(text)')""",
        [auth_user],
    ).fetchone()
    if row is None:
        return ["pgbouncer.user_lookup(text) is missing"]
    definer, config, owner_super, source, public, auth, grantees = row
    problems = []
    if not definer or not owner_super:
        problems.append("pgbouncer.user_lookup is not SECURITY DEFINER of a superuser")
    if config != ["search_path=pg_catalog, pg_temp"]:
        problems.append(f"pgbouncer.user_lookup has settings {config}, not a pinned search_path")
    if public or grantees != [auth_user] or not auth:
        problems.append(
            f"pgbouncer.user_lookup is executable by {grantees or 'nobody'}{' and PUBLIC' if public else ''}"
        )
    if source != lookup_body(role_prefix):
        problems.append("pgbouncer.user_lookup's body was changed")
    # Nothing else lives in the schema (the migrations' fingerprint leaves it to this check), and only its
    # superuser owner and the auth role may use it.
    others = conn.execute(
        """SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
            WHERE p.pronamespace = 'pgbouncer'::regnamespace AND p.oid <> to_regprocedure('pgbouncer.user_lookup(text)')
           UNION ALL
           SELECT c.oid::regclass::text FROM pg_catalog.pg_class c WHERE c.relnamespace = 'pgbouncer'::regnamespace
           UNION ALL
           SELECT 'schema owned by ' || n.nspowner::regrole::text FROM pg_catalog.pg_namespace n
             JOIN pg_catalog.pg_roles o ON o.oid = n.nspowner WHERE n.nspname = 'pgbouncer' AND NOT o.rolsuper
           UNION ALL
           SELECT 'schema usable by ' || CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
             FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
            WHERE n.nspname = 'pgbouncer' AND a.grantee <> n.nspowner
              AND (a.grantee = 0 OR a.grantee::regrole::text <> %s OR a.privilege_type <> 'USAGE')
           ORDER BY 1""",
        [auth_user],
    ).fetchall()
    problems += [f"pgbouncer: {name} is not the pooler's" for (name,) in others]
    return problems


def drop_lookup(conn: psycopg.Connection) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))


# ----------------------------------------------------------------------------------------------- resource


@dataclass(frozen=True)
class PoolerDatabaseArgs:
    """One tier database behind the pooler: ``role_prefix`` names the roles the lookup answers for."""

    tier: str
    database: pulumi.Input[str]
    role_prefix: str
    pool_size: int

    def props(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "database": self.database,
            "role_prefix": self.role_prefix,
            "pool_size": self.pool_size,
            "drift": [],
        }


def _problems(props: dict[str, Any]) -> list[dynamic.CheckFailure]:
    failures = []
    if props.get("tier") not in TIERS:
        failures.append(dynamic.CheckFailure("tier", f"must be one of {', '.join(TIERS)}"))
    problem = admin.database_name_problem(props.get("database"))
    if problem and isinstance(props.get("database"), str):
        failures.append(dynamic.CheckFailure("database", problem))
    if not isinstance(props.get("role_prefix"), str) or not PREFIX_RE.match(props["role_prefix"]):
        failures.append(
            dynamic.CheckFailure("role_prefix", "must be lower-case letters, digits, _ and end in _")
        )
    size = props.get("pool_size")
    if not isinstance(size, int | float) or int(size) != size or not 1 <= size <= 1000:
        failures.append(
            dynamic.CheckFailure("pool_size", f"must be a whole number from 1 to 1000, got {size!r}")
        )
    return failures


class PoolerDatabaseProvider(dynamic.ResourceProvider):
    """Installs the lookup function (and the auth role's CONNECT), then the pooler's entry, then RELOAD."""

    def configure(self, req: dynamic.ConfigureRequest) -> None:
        self.settings = ProviderSettings.from_request(req)

    def _targets(self, props: dict[str, Any]) -> tuple[ServerTarget, PoolerTarget]:
        settings = getattr(self, "settings", ProviderSettings())
        return server_target(settings, props["tier"]), pooler_target(settings)

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        return dynamic.CheckResult(news, _problems(news))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = [
            k for k in ("tier", "database", "role_prefix", "pool_size", "drift") if olds.get(k) != news.get(k)
        ]
        replaces = [k for k in changed if k in ("tier", "database")]
        return dynamic.DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=True)

    def _apply(self, props: dict[str, Any]) -> dict[str, Any]:
        server, pooler = self._targets(props)
        database = props["database"]
        with connect(server, application_name="penguinmails-pooler") as conn:
            run(
                server,
                f"GRANT CONNECT ON DATABASE {database} TO {pooler.auth_user}",
                lambda: admin.database_privileges_set(conn, database, pooler.auth_user, ["CONNECT"]),
            )
        with connect(server, database, application_name="penguinmails-pooler") as conn:
            run(
                server,
                f"install pgbouncer.user_lookup in {database}",
                lambda: install_lookup(conn, props["role_prefix"], pooler.auth_user),
            )
        line = entry_line(database, server.host, server.port, database, int(props["pool_size"]))
        set_entry(pooler, database, line)
        return {
            **props,
            "pool_size": int(props["pool_size"]),
            "host": pooler.host,
            "port": pooler.port,
            "drift": [],
        }

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        return dynamic.CreateResult(id_=props["database"], outs=self._apply(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(outs=self._apply(news))

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        server, pooler = self._targets(props)
        drift = []
        live = show_databases(pooler).get(id_)
        if live is None:
            drift.append(f"{pooler.label} has no database {id_}")
        else:
            if live.get("pool_size") != props.get("pool_size"):
                drift.append(
                    f"{pooler.label}: {id_} has pool_size {live.get('pool_size')}, not {props.get('pool_size')}"
                )
            if live.get("database") != props.get("database") or int(live.get("port") or 0) != server.port:
                drift.append(
                    f"{pooler.label}: {id_} points at {live.get('host')}:{live.get('port')}/{live.get('database')}"
                )
        try:
            with connect(server, props["database"], application_name="penguinmails-pooler") as conn:
                drift += run(
                    server,
                    "read pgbouncer.user_lookup",
                    lambda: lookup_problems(conn, props["role_prefix"], pooler.auth_user),
                )
        except PostgresError as exc:
            if exc.sqlstate == "3D000":
                return dynamic.ReadResult(id_="", outs={})
            raise
        outs = {**props, "drift": drift}
        inputs = {k: v for k, v in outs.items() if not k.startswith("__") and k not in ("host", "port")}
        return dynamic.ReadResult(id_=id_, outs=outs, inputs=inputs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        server, pooler = self._targets(props)
        set_entry(pooler, id_, None)
        try:
            with connect(server, props["database"], application_name="penguinmails-pooler") as conn:
                run(server, "drop pgbouncer.user_lookup", lambda: drop_lookup(conn))
        except PostgresError as exc:
            if exc.sqlstate != "3D000":
                raise


class PoolerDatabase(dynamic.Resource, module="postgres", name="PoolerDatabase"):
    """A tier database behind PgBouncer; ``host``/``port`` are where clients reach the pool."""

    host: pulumi.Output[str]
    port: pulumi.Output[int]
    drift: pulumi.Output[list]

    def __init__(
        self, resource_name: str, args: PoolerDatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(
            PoolerDatabaseProvider(), resource_name, {**args.props(), "host": None, "port": None}, opts
        )
