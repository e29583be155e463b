"""Databases, roles with their grants, and extensions: plain functions on an admin connection.

The Pulumi providers in :mod:`modules.postgres.resources` only map resource properties onto these; the
tests and the benchmark call them directly. Every name reaches SQL through ``psycopg.sql.Identifier``;
passwords reach the server only as SCRAM verifiers.

Managed roles are never superuser, never ``BYPASSRLS``, never members of another role, and own nothing
but (for the migrator) the tier's objects: :func:`role_problems` reports any of that as drift.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from modules.postgres.client import ServerTarget, connect, scram_sha256_verifier

NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
DATABASE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
GRANT_KINDS: dict[str, frozenset[str]] = {
    "schema": frozenset({"USAGE"}),
    "tables": frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"}),
    "sequences": frozenset({"USAGE", "SELECT", "UPDATE"}),
    "functions": frozenset({"EXECUTE"}),
}
# Privileges an application role must never hold: they bypass RLS or let it change the schema.
NEVER_GRANTED = {
    "TRUNCATE": "TRUNCATE is not subject to row level security",
    "REFERENCES": "REFERENCES lets foreign-key checks probe other tenants' keys",
    "TRIGGER": "a trigger runs code as the table owner",
    "CREATE": "application roles must not create objects",
    "MAINTAIN": "application roles must not run maintenance",
}
DATABASE_PRIVILEGES = frozenset({"CONNECT", "CREATE", "TEMPORARY"})
ROLE_SETTINGS = frozenset(
    {
        "search_path",
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "default_transaction_read_only",
        "work_mem",
    }
)
# relkind → grant kind
RELKINDS = {"r": "tables", "p": "tables", "v": "tables", "m": "tables", "f": "tables", "S": "sequences"}
DEFAULT_ACL_KINDS = {"r": "tables", "S": "sequences", "f": "functions"}
ACL_LOCK_CLASS, ACL_LOCK_OBJECT = 0x504D, 2  # 'PM', grants (the migrations lock is object 1)
KIND_SQL = {"tables": "TABLES", "sequences": "SEQUENCES", "functions": "FUNCTIONS"}


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


# ------------------------------------------------------------------------------------------ validation


def name_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not NAME_RE.match(value):
        return "must be 1-63 lower-case letters, digits or underscores, not starting with a digit"
    if value.startswith("pg_"):
        return "names starting with pg_ are reserved by PostgreSQL"
    return None


def database_name_problem(value: Any) -> str | None:
    """Databases may be named by someone else (a hosted endpoint): mixed case and hyphens are fine."""
    if not isinstance(value, str) or not DATABASE_RE.match(value):
        return "must be 1-63 letters, digits, underscores or hyphens, starting with a letter or underscore"
    return None


def grant_problems(grants: Any) -> list[str]:
    """Reasons a grant list is unusable; each names the entry."""
    if not isinstance(grants, list):
        return ["must be a list of {on, schema, privileges}"]
    reasons: list[str] = []
    seen: set[tuple[str, str]] = set()
    for index, grant in enumerate(grants):
        where = f"[{index}]"
        if not isinstance(grant, dict) or set(grant) != {"on", "schema", "privileges"}:
            reasons.append(f"{where}: must have exactly the keys on, schema, privileges")
            continue
        kind, schema, privileges = grant["on"], grant["schema"], grant["privileges"]
        if kind not in GRANT_KINDS:
            reasons.append(f"{where}.on: must be one of {', '.join(GRANT_KINDS)}, got {kind!r}")
            continue
        problem = name_problem(schema)
        if problem:
            reasons.append(f"{where}.schema: {problem}")
        if not isinstance(privileges, list) or not privileges:
            reasons.append(f"{where}.privileges: must be a non-empty list")
            continue
        for privilege in privileges:
            if privilege in NEVER_GRANTED:
                reasons.append(
                    f"{where}.privileges: {privilege} is never granted ({NEVER_GRANTED[privilege]})"
                )
            elif privilege not in GRANT_KINDS[kind]:
                allowed = ", ".join(sorted(GRANT_KINDS[kind]))
                reasons.append(f"{where}.privileges: {privilege!r} does not apply to {kind} (use {allowed})")
        if (kind, schema) in seen:
            reasons.append(f"{where}: {kind} in schema {schema} is listed twice")
        seen.add((kind, schema))
    return reasons


def settings_problems(settings: Any) -> list[str]:
    if not isinstance(settings, dict):
        return ["must map setting names to string values"]
    reasons = []
    for key, value in settings.items():
        if key not in ROLE_SETTINGS:
            reasons.append(f"{key}: not a supported role setting (use {', '.join(sorted(ROLE_SETTINGS))})")
        elif not isinstance(value, str) or not value:
            reasons.append(f"{key}: the value must be a non-empty string")
    return reasons


# ------------------------------------------------------------------------------------------- databases


def database_get(conn: psycopg.Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(
        """SELECT d.datname, pg_get_userbyid(d.datdba),
                  d.datacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(d.datacl) a
                                              WHERE a.grantee = 0 AND a.privilege_type = 'CONNECT')
             FROM pg_database d WHERE d.datname = %s""",
        [name],
    ).fetchone()
    if row is None:
        return None
    return {"name": row[0], "owner": row[1], "public_connect": row[2]}


def database_create(conn: psycopg.Connection, name: str, owner: str) -> None:
    """A UTF-8 database from template0 that only roles granted CONNECT can reach."""
    conn.execute(
        sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'").format(
            _ident(name), _ident(owner)
        )
    )
    database_restrict(conn, name)


def database_restrict(conn: psycopg.Connection, name: str) -> None:
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(_ident(name)))


def database_set_owner(conn: psycopg.Connection, name: str, owner: str) -> None:
    conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(_ident(name), _ident(owner)))


def database_drop(conn: psycopg.Connection, name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(name)))


def database_privileges_get(conn: psycopg.Connection, database: str, role: str) -> list[str]:
    rows = conn.execute(
        """SELECT a.privilege_type FROM pg_database d, aclexplode(d.datacl) a
            WHERE d.datname = %s AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)
            ORDER BY 1""",
        [database, role],
    ).fetchall()
    return [row[0] for row in rows]


def serialize_acl_changes(conn: psycopg.Connection) -> None:
    """Roles granted at the same time rewrite the same catalog rows ("tuple concurrently updated").

    A transaction-scoped advisory lock makes them take turns; the caller's COMMIT or ROLLBACK releases it.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ACL_LOCK_CLASS, ACL_LOCK_OBJECT])


def database_privileges_set(
    conn: psycopg.Connection, database: str, role: str, privileges: list[str]
) -> None:
    """Exactly ``privileges`` on ``database`` for ``role``, in one transaction of its own."""
    with conn.transaction():
        serialize_acl_changes(conn)
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(_ident(database), _ident(role)))
        if privileges:
            conn.execute(
                sql.SQL("GRANT {} ON DATABASE {} TO {}").format(
                    sql.SQL(", ").join(sql.SQL(p) for p in sorted(privileges)), _ident(database), _ident(role)
                )
            )


# ----------------------------------------------------------------------------------------------- roles


def role_get(conn: psycopg.Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(
        """SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
                  r.rolreplication, r.rolbypassrls, r.rolconnlimit,
                  ARRAY(SELECT b.rolname::text FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid
                         WHERE m.member = r.oid ORDER BY 1),
                  ARRAY(SELECT unnest(s.setconfig) FROM pg_db_role_setting s
                         WHERE s.setrole = r.oid AND s.setdatabase = 0)
             FROM pg_roles r WHERE r.rolname = %s""",
        [name],
    ).fetchone()
    if row is None:
        return None
    settings = {}
    for item in row[10] or []:
        key, _, value = item.partition("=")
        settings[key] = value
    return {
        "name": row[0],
        "superuser": row[1],
        "inherit": row[2],
        "createrole": row[3],
        "createdb": row[4],
        "login": row[5],
        "replication": row[6],
        "bypassrls": row[7],
        "connection_limit": row[8],
        "member_of": list(row[9]),
        "settings": settings,
    }


def _normal_setting(key: str, value: str) -> str:
    if key == "search_path":
        return ", ".join(part.strip().strip('"') for part in value.split(","))
    return value.strip()


def _setting_value(key: str, value: str) -> sql.Composable:
    if key == "search_path":
        return sql.SQL(", ").join(_ident(part.strip()) for part in value.split(",") if part.strip())
    return sql.Literal(value)


def role_flag_problems(live: dict[str, Any], login: bool) -> list[str]:
    """Attributes a managed role must not have (or must have)."""
    problems = []
    for flag, why in (
        ("superuser", "a superuser bypasses row level security"),
        ("bypassrls", "BYPASSRLS skips every policy"),
        ("createrole", "it could create a bypassing role"),
        ("createdb", "it could create databases"),
        ("replication", "it could stream every row"),
    ):
        if live[flag]:
            problems.append(f"role {live['name']} has {flag.upper()} ({why})")
    if not live["inherit"]:
        problems.append(f"role {live['name']} has NOINHERIT (the stack manages INHERIT roles)")
    if live["login"] != login:
        problems.append(
            f"role {live['name']} has {'LOGIN' if live['login'] else 'NOLOGIN'}, expected "
            f"{'LOGIN' if login else 'NOLOGIN'}"
        )
    for parent in live["member_of"]:
        problems.append(f"role {live['name']} is a member of {parent} (it would gain that role's rights)")
    return problems


def role_create(conn: psycopg.Connection, props: dict[str, Any]) -> None:
    """Create the role (safe defaults: NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS)."""
    parts = [sql.SQL("CREATE ROLE {} WITH").format(_ident(props["name"]))]
    parts.append(sql.SQL("LOGIN" if props.get("login") else "NOLOGIN"))
    parts.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(int(props.get("connection_limit", -1)))))
    if props.get("password"):
        parts.append(sql.SQL("PASSWORD {}").format(sql.Literal(scram_sha256_verifier(props["password"]))))
    conn.execute(sql.SQL(" ").join(parts))
    settings_apply(conn, props["name"], props.get("settings") or {}, {})
    # A non-superuser admin (a hosted server's CREATEROLE admin) needs membership to SET ROLE and grant.
    if not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
        conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(_ident(props["name"])))


def role_update(conn: psycopg.Connection, props: dict[str, Any], previous: dict[str, Any]) -> None:
    """Bring the role in line with ``props``; only attributes that differ are touched."""
    name = props["name"]
    live = role_get(conn, name)
    if live is None:
        role_create(conn, props)
        return
    changes = []
    for flag in ("superuser", "createrole", "createdb", "replication", "bypassrls"):
        if live[flag]:
            changes.append(sql.SQL("NO" + flag.upper()))
    if not live["inherit"]:
        changes.append(sql.SQL("INHERIT"))
    if live["login"] != bool(props.get("login")):
        changes.append(sql.SQL("LOGIN" if props.get("login") else "NOLOGIN"))
    limit = int(props.get("connection_limit", -1))
    if live["connection_limit"] != limit:
        changes.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(limit)))
    if props.get("password") and props.get("password") != previous.get("password"):
        changes.append(sql.SQL("PASSWORD {}").format(sql.Literal(scram_sha256_verifier(props["password"]))))
    if changes:
        conn.execute(sql.SQL("ALTER ROLE {} WITH ").format(_ident(name)) + sql.SQL(" ").join(changes))
    for parent in live["member_of"]:
        conn.execute(sql.SQL("REVOKE {} FROM {}").format(_ident(parent), _ident(name)))
    settings_apply(conn, name, props.get("settings") or {}, live["settings"])


def role_set_password(conn: psycopg.Connection, name: str, password: str) -> None:
    conn.execute(
        sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
            _ident(name), sql.Literal(scram_sha256_verifier(password))
        )
    )


def settings_apply(conn: psycopg.Connection, name: str, wanted: dict[str, str], live: dict[str, str]) -> None:
    for key in sorted(set(live) - set(wanted)):
        conn.execute(sql.SQL("ALTER ROLE {} RESET {}").format(_ident(name), _ident(key)))
    for key, value in sorted(wanted.items()):
        if _normal_setting(key, live.get(key, "")) != _normal_setting(key, value):
            conn.execute(
                sql.SQL("ALTER ROLE {} SET {} = {}").format(
                    _ident(name), _ident(key), _setting_value(key, value)
                )
            )


def settings_match(wanted: dict[str, str], live: dict[str, str]) -> bool:
    if set(wanted) != set(live):
        return False
    return all(_normal_setting(k, wanted[k]) == _normal_setting(k, live[k]) for k in wanted)


def role_drop(admin: ServerTarget, name: str, database: str | None) -> None:
    """Drop the role; in ``database`` first drop what it owns and revoke what it was granted."""
    with connect(admin, application_name="penguinmails-role") as conn:
        if role_get(conn, name) is None:
            return
        exists = database is not None and database_get(conn, database) is not None
    if exists:
        with connect(admin, database, application_name="penguinmails-role") as conn, conn.transaction():
            serialize_acl_changes(conn)
            conn.execute(sql.SQL("DROP OWNED BY {}").format(_ident(name)))
    with connect(admin, application_name="penguinmails-role") as conn, conn.transaction():
        serialize_acl_changes(conn)
        conn.execute(sql.SQL("DROP OWNED BY {}").format(_ident(name)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(_ident(name)))


def drop_owned(conn: psycopg.Connection, role: str) -> None:
    """Drop every object ``role`` owns in this database and revoke what it was granted here."""
    conn.execute(sql.SQL("DROP OWNED BY {}").format(_ident(role)))


def password_works(admin: ServerTarget, name: str, password: str, database: str) -> bool | None:
    """True/False when the server accepted/refused the password; None when it could not tell."""
    try:
        with connect(admin.with_login(name, password), database, application_name="penguinmails-check"):
            return True
    except Exception as exc:  # PostgresUnreachable carries the SQLSTATE of the refusal
        if getattr(exc, "sqlstate", None) == "28P01":
            return False
        return None


# ---------------------------------------------------------------------------------------------- grants


def _owned_objects(conn: psycopg.Connection, role: str) -> list[str]:
    rows = conn.execute(
        """SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = %s)
              AND c.relkind IN ('r','p','v','m','S','f')
           UNION ALL
           SELECT format('schema %%I', nspname) FROM pg_namespace
            WHERE nspowner = (SELECT oid FROM pg_roles WHERE rolname = %s)
           UNION ALL
           SELECT p.oid::regprocedure::text FROM pg_proc p
            WHERE p.proowner = (SELECT oid FROM pg_roles WHERE rolname = %s)
           ORDER BY 1""",
        [role, role, role],
    ).fetchall()
    return [row[0] for row in rows]


def live_privileges(conn: psycopg.Connection, role: str) -> dict[tuple[str, str, str], set[str]]:
    """(kind, schema, object) → privileges ``role`` holds directly, for every object of this database.

    Column grants count too (kind ``columns``, object ``table.column``): one column of a table the role may not
    read is as much a leak as the table."""
    rows = conn.execute(
        """WITH r AS (SELECT oid FROM pg_roles WHERE rolname = %s)
           SELECT 'schema', n.nspname::text, n.nspname::text, a.privilege_type
             FROM pg_namespace n, aclexplode(n.nspacl) a WHERE a.grantee = (SELECT oid FROM r)
           UNION ALL
           SELECT c.relkind::text, n.nspname::text, c.relname::text, a.privilege_type
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
            WHERE a.grantee = (SELECT oid FROM r) AND c.relkind IN ('r','p','v','m','f','S')
           UNION ALL
           SELECT 'column', n.nspname::text, c.relname || '.' || t.attname, a.privilege_type
             FROM pg_attribute t JOIN pg_class c ON c.oid = t.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(t.attacl) a
            WHERE a.grantee = (SELECT oid FROM r) AND NOT t.attisdropped
           UNION ALL
           SELECT 'function', n.nspname::text, p.oid::regprocedure::text, a.privilege_type
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(p.proacl) a
            WHERE a.grantee = (SELECT oid FROM r)""",
        [role],
    ).fetchall()
    found: dict[tuple[str, str, str], set[str]] = {}
    for kind, schema, name, privilege in rows:
        kind = {"schema": "schema", "function": "functions", "column": "columns"}.get(kind) or RELKINDS[kind]
        found.setdefault((kind, schema, name), set()).add(privilege)
    return found


def _objects_in(conn: psycopg.Connection, kind: str, schema: str) -> list[str]:
    if kind == "schema":
        row = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = %s", [schema]).fetchone()
        return [row[0]] if row else []
    if kind == "functions":
        query = """SELECT p.oid::regprocedure::text FROM pg_proc p
                     JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s ORDER BY 1"""
        return [row[0] for row in conn.execute(query, [schema]).fetchall()]
    relkinds = ["S"] if kind == "sequences" else ["r", "p", "v", "m", "f"]
    query = """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = %s AND c.relkind = ANY (%s) ORDER BY 1"""
    return [row[0] for row in conn.execute(query, [schema, relkinds]).fetchall()]


def _default_privileges(
    conn: psycopg.Connection, role: str, grantor: str | None = None
) -> dict[tuple[str, str], set[str]]:
    """(kind, schema) → what ``grantor``'s (or, with None, anyone's) new objects give ``role``.

    Schema ``*`` stands for defaults without ``IN SCHEMA`` (every schema); with ``grantor=None`` the kind is
    ``<creator>:<kind>``."""
    rows = conn.execute(
        """SELECT pg_get_userbyid(d.defaclrole), d.defaclobjtype::text, coalesce(n.nspname, '*'), a.privilege_type
             FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace,
                  aclexplode(d.defaclacl) a
            WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)""",
        [role],
    ).fetchall()
    found: dict[tuple[str, str], set[str]] = {}
    for creator, objtype, schema, privilege in rows:
        kind = DEFAULT_ACL_KINDS.get(objtype, objtype)
        if grantor is None:
            found.setdefault((f"{creator}:{kind}", schema), set()).add(privilege)
        elif creator == grantor:
            found.setdefault((kind, schema), set()).add(privilege)
    return found


_PUBLIC_GRANTS = """
WITH owned AS (SELECT n.oid, n.nspname, n.nspacl FROM pg_namespace n
                WHERE n.nspowner = (SELECT oid FROM pg_roles WHERE rolname = %(grantor)s))
SELECT 'schema', o.nspname::text, NULL::text, NULL::text, a.privilege_type
  FROM owned o, aclexplode(o.nspacl) a WHERE a.grantee = 0
UNION ALL
SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END, o.nspname::text, c.relname::text, NULL,
       a.privilege_type
  FROM pg_class c JOIN owned o ON o.oid = c.relnamespace,
       aclexplode(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char",
                                                c.relowner))) a
 WHERE a.grantee = 0 AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
UNION ALL
SELECT 'column', o.nspname::text, c.relname::text, t.attname::text, a.privilege_type
  FROM pg_attribute t JOIN pg_class c ON c.oid = t.attrelid JOIN owned o ON o.oid = c.relnamespace,
       aclexplode(t.attacl) a
 WHERE a.grantee = 0 AND NOT t.attisdropped
UNION ALL
SELECT 'function', o.nspname::text, p.proname::text, pg_get_function_identity_arguments(p.oid), a.privilege_type
  FROM pg_proc p JOIN owned o ON o.oid = p.pronamespace,
       aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
 WHERE a.grantee = 0
UNION ALL
SELECT 'default', coalesce(n.nspname::text, '*'), d.defaclobjtype::text, NULL, a.privilege_type
  FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) a
 WHERE a.grantee = 0 AND d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = %(grantor)s)
   AND d.defaclobjtype IN ('r', 'S', 'f') AND (d.defaclnamespace = 0 OR n.oid IN (SELECT oid FROM owned))
UNION ALL
-- No global default for the grantor's functions means the built-in one: EXECUTE for PUBLIC.
SELECT 'default', '*', 'f', NULL, 'EXECUTE'
 WHERE NOT EXISTS (SELECT 1 FROM pg_default_acl d
                    WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = %(grantor)s)
                      AND d.defaclnamespace = 0 AND d.defaclobjtype = 'f')
"""


def public_grants(conn: psycopg.Connection, grantor: str) -> list[tuple[str, sql.Composable]]:
    """Privileges PUBLIC holds in the schemas ``grantor`` owns (and on its new objects): (label, revoke).

    Every role of the server is a member of PUBLIC, so any such grant reaches the tenant-facing roles
    whatever their own grants say; the revoke statement takes it back (run it as ``grantor``)."""
    found: dict[str, tuple[set[str], sql.Composable]] = {}
    for kind, schema, name, detail, privilege in conn.execute(_PUBLIC_GRANTS, {"grantor": grantor}):
        s = _ident(schema)
        if kind == "schema":
            label, revoke = f"schema {schema}", sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(s)
        elif kind in ("table", "sequence"):
            label = f"{kind} {schema}.{name}"
            revoke = sql.SQL("REVOKE ALL ON {} {} FROM PUBLIC").format(
                sql.SQL(kind.upper()), sql.Identifier(schema, name)
            )
        elif kind == "column":
            label = f"column {schema}.{name}.{detail}"
            revoke = sql.SQL("REVOKE ALL ({}) ON TABLE {} FROM PUBLIC").format(
                _ident(detail), sql.Identifier(schema, name)
            )
        elif kind == "function":
            label = f"function {schema}.{name}({detail})"
            revoke = sql.SQL("REVOKE ALL ON FUNCTION {}({}) FROM PUBLIC").format(
                sql.Identifier(schema, name), sql.SQL(detail)
            )
        else:
            objects = KIND_SQL[DEFAULT_ACL_KINDS[name]]
            where = "every schema" if schema == "*" else f"schema {schema}"
            label = f"new {objects.lower()} of {grantor} in {where}"
            revoke = sql.SQL("ALTER DEFAULT PRIVILEGES {}REVOKE ALL ON {} FROM PUBLIC").format(
                sql.SQL("") if schema == "*" else sql.SQL("IN SCHEMA {} ").format(s), sql.SQL(objects)
            )
        found.setdefault(label, (set(), revoke))[0].add(privilege)
    return [
        (f"{label} ({', '.join(sorted(privileges))})", revoke)
        for label, (privileges, revoke) in found.items()
    ]


def role_problems(
    conn: psycopg.Connection, role: str, grantor: str, grants: list[dict[str, Any]]
) -> list[str]:
    """In the tier database: objects the role owns, and privileges missing or extra against ``grants``."""
    problems = [
        f"role {role} owns {name} (application roles must own nothing)" for name in _owned_objects(conn, role)
    ]
    live = live_privileges(conn, role)
    expected: dict[tuple[str, str], set[str]] = {(g["on"], g["schema"]): set(g["privileges"]) for g in grants}
    checked: set[tuple[str, str, str]] = set()
    for (kind, schema), privileges in sorted(expected.items()):
        objects = _objects_in(conn, kind, schema)
        if kind == "schema" and not objects:
            problems.append(f"schema {schema} does not exist")
        for name in objects:
            key = (kind, schema, name)
            checked.add(key)
            have = live.get(key, set())
            label = schema if kind == "schema" else f"{schema}.{name}" if kind != "functions" else name
            missing, extra = privileges - have, have - privileges
            if missing:
                problems.append(f"{role} lacks {', '.join(sorted(missing))} on {label}")
            if extra:
                problems.append(f"{role} has {', '.join(sorted(extra))} on {label}, not granted by the stack")
    for key, have in sorted(live.items()):
        if key not in checked:
            kind, schema, name = key
            label = schema if kind == "schema" else f"{schema}.{name}" if kind != "functions" else name
            problems.append(f"{role} has {', '.join(sorted(have))} on {label}, not granted by the stack")
    defaults = _default_privileges(conn, role, grantor)
    for (kind, schema), privileges in sorted(expected.items()):
        if kind == "schema":
            continue
        if defaults.get((kind, schema), set()) != privileges:
            problems.append(
                f"default privileges of {grantor} for new {kind} in {schema} do not give {role} "
                f"exactly {', '.join(sorted(privileges))}"
            )
    wanted_defaults = {(f"{grantor}:{kind}", schema) for kind, schema in expected if kind != "schema"}
    for (creator_kind, schema), have in sorted(_default_privileges(conn, role).items()):
        if (creator_kind, schema) not in wanted_defaults:
            creator, kind = creator_kind.split(":", 1)
            where = "every schema" if schema == "*" else schema
            problems.append(
                f"default privileges of {creator} give {role} {', '.join(sorted(have))} on new {kind} in "
                f"{where}, not granted by the stack"
            )
    problems += [
        f"PUBLIC has {label}: every role, {role} included, holds it; not granted by the stack"
        for label, _revoke in public_grants(conn, grantor)
    ]
    return problems


def grants_apply(
    conn: psycopg.Connection,
    role: str,
    grantor: str,
    grants: list[dict[str, Any]],
    previous: Iterable[dict[str, Any]] = (),
) -> None:
    """Revoke what ``role`` (and PUBLIC) holds on the grantor's objects, then grant ``grants`` (also for
    future objects).

    Runs as ``grantor`` (the tier's owner) inside the caller's transaction, so the ACLs name the owner as
    grantor and default privileges apply to the objects later migrations create.
    """
    serialize_acl_changes(conn)
    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(_ident(grantor)))
    target = _ident(role)
    schemas = {g["schema"] for g in [*grants, *previous]}
    schemas |= {schema for (_kind, schema, _name) in live_privileges(conn, role)}
    defaults = _default_privileges(conn, role, grantor)
    schemas |= {schema for (_kind, schema) in defaults}
    if any(schema == "*" for (_kind, schema) in defaults):
        for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
            conn.execute(
                sql.SQL("ALTER DEFAULT PRIVILEGES REVOKE ALL ON {} FROM {}").format(sql.SQL(kind), target)
            )
    for _label, revoke in public_grants(conn, grantor):
        conn.execute(revoke)
    owned = {
        row[0]
        for row in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspowner = (SELECT oid FROM pg_roles WHERE rolname = %s)",
            [grantor],
        ).fetchall()
    }
    for schema in sorted(schemas & owned):
        s = _ident(schema)
        conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(s, target))
        for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
            conn.execute(
                sql.SQL("REVOKE ALL ON ALL {} IN SCHEMA {} FROM {}").format(sql.SQL(kind), s, target)
            )
            conn.execute(
                sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} REVOKE ALL ON {} FROM {}").format(
                    s, sql.SQL(kind), target
                )
            )
    for grant in grants:
        privileges = sql.SQL(", ").join(sql.SQL(p) for p in sorted(grant["privileges"]))
        s = _ident(grant["schema"])
        if grant["on"] == "schema":
            conn.execute(sql.SQL("GRANT {} ON SCHEMA {} TO {}").format(privileges, s, target))
            continue
        kind = sql.SQL(KIND_SQL[grant["on"]])
        conn.execute(sql.SQL("GRANT {} ON ALL {} IN SCHEMA {} TO {}").format(privileges, kind, s, target))
        conn.execute(
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT {} ON {} TO {}").format(
                s, privileges, kind, target
            )
        )
    conn.execute("RESET ROLE")


# ------------------------------------------------------------------------------------------ extensions


def extension_get(conn: psycopg.Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(
        """SELECT e.extname, e.extversion, n.nspname FROM pg_extension e
             JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = %s""",
        [name],
    ).fetchone()
    return None if row is None else {"name": row[0], "version": row[1], "schema": row[2]}


def extension_available(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s", [name]).fetchone()
    return row is not None


def extension_create(conn: psycopg.Connection, name: str, schema: str) -> None:
    conn.execute(sql.SQL("CREATE EXTENSION {} WITH SCHEMA {}").format(_ident(name), _ident(schema)))


def extension_drop(conn: psycopg.Connection, name: str) -> None:
    conn.execute(sql.SQL("DROP EXTENSION IF EXISTS {}").format(_ident(name)))
