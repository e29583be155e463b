"""Attacks as each tenant-facing role (app, readonly) of every tier: tenant A's session against tenant B.

Every tier is provisioned as the component does it and tenants A and B are seeded into every tenant table.
A session of tenant A then tries to read, change, delete, move and insert B's rows through every table and
through every function it may execute, to take the owner's role, to create objects anywhere, and to use
temporary objects against SECURITY DEFINER functions. Tables and functions come from the catalog: a new
table is attacked the moment a migration creates it, and a new executable function fails
:func:`test_every_executable_function_has_an_attack_case` until ``FUNCTION_ATTACKS`` has a case for it.

Privileges decide what is tried: where the role holds a privilege, RLS must stop the attack; where it does
not, the server must refuse the statement outright. Readonly sessions switch their transactions to READ WRITE
first (``default_transaction_read_only`` is a default, not a fence), so only privileges protect the data.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import errors, sql

from modules.postgres import admin as pg_admin
from modules.postgres import catalog
from modules.postgres.duties import TENANT_FACING, duties_for, grants_for
from tests.support.postgres import TierDb, provision, provision_queue_with_worker, seed_tenants, teardown
from tests.support.rls import (
    SYSTEM_SCHEMAS,
    TENANT_A,
    TENANT_B,
    Table,
    count,
    error_of,
    is_permission_refusal,
    is_rls_refusal,
    key_match,
    key_of,
    parent_tables,
    set_tenant,
    table_privileges,
    tenant_tables,
)

pytestmark = pytest.mark.services

TIERS = ("oltp", "content", "analytics", "queue")
CASES = [(tier, kind) for tier in TIERS for kind in TENANT_FACING]
# Schemas whose tables a tenant-facing role may touch although they have no tenant_id: shared reference data,
# read only.
SHARED_SCHEMAS = {"platform"}
# Tables without tenant_id fenced by policies of their own (RLS forced), each with its own attack below.
OWN_POLICY_TABLES = {"app.users": "test_tenant_a_cannot_reach_tenant_b_users"}
# Platform records without tenant data that one duty may read (SELECT only): the row retention runs (tier,
# table, counts, times), read by the exporter as readonly; test_postgres_retention attacks the rest.
RECORD_TABLES = {"retention.runs": ("readonly",)}


@pytest.fixture(scope="module")
def tiers(devenv_env) -> Iterator[dict[str, TierDb]]:
    created: dict[str, TierDb] = {}
    try:
        for tier in TIERS:
            created[tier] = provision(tier)
            seed_tenants(created[tier], [TENANT_A, TENANT_B])
        yield created
    finally:
        for db in created.values():
            teardown(db)


@pytest.fixture(params=CASES, ids=[f"{tier}-{kind}" for tier, kind in CASES])
def case(request, tiers) -> tuple[TierDb, str]:
    tier, kind = request.param
    return tiers[tier], kind


@contextmanager
def tenant_session(db: TierDb, kind: str, tenant: uuid.UUID = TENANT_A) -> Iterator[psycopg.Connection]:
    """The role's own login, in a READ WRITE transaction of ``tenant`` that is rolled back at the end."""
    with db.connect(kind) as conn, conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ WRITE")
        set_tenant(conn, tenant)
        yield conn


def b_key(db: TierDb, table: Table) -> tuple:
    with db.connect() as admin:
        key = key_of(admin, table, TENANT_B, table.primary_key)
    assert key is not None, f"{table}: no seed row of tenant B (extend tests/support/postgres.py SEEDS)"
    return key


def a_row_as_b(db: TierDb, table: Table) -> str:
    """One of A's rows as JSON, relabelled as B's (read by the admin: the role may not be able to SELECT)."""
    with db.connect() as admin:
        row = admin.execute(
            sql.SQL(
                "SELECT (to_jsonb(t) || jsonb_build_object('tenant_id', %s::uuid))::text FROM {} t "
                "WHERE tenant_id = %s LIMIT 1"
            ).format(table.ident),
            [TENANT_B, TENANT_A],
        ).fetchone()
    assert row is not None, f"{table}: no seed row of tenant A"
    return row[0]


# ------------------------------------------------------------------------------------------------ tables


def test_tenant_a_cannot_read_tenant_b_through_any_table(case):
    db, kind = case
    failures = []
    with db.connect() as admin:
        tables = parent_tables(admin)
        privileges = {t: table_privileges(admin, db.role(kind), t) for t in tables}
        own = {t: count(admin, t, "tenant_id = %s", [TENANT_A]) for t in tables}
    assert tables
    keys = {t: b_key(db, t) for t in tables}
    with tenant_session(db, kind) as conn:
        for table in tables:
            query = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
                table.ident, key_match(table.primary_key)
            )
            if "SELECT" not in privileges[table]:
                exc = error_of(conn, query, list(keys[table]))
                if not is_permission_refusal(exc):
                    failures.append(f"{table}: SELECT without the privilege gave {exc!r}")
                continue
            if count(conn, table, "tenant_id = %s", [TENANT_B]):
                failures.append(f"{table}: tenant B's rows are visible by tenant_id")
            if conn.execute(query, list(keys[table])).fetchone()[0]:
                failures.append(f"{table}: tenant B's row is visible by its primary key")
            if count(conn, table) != own[table]:
                failures.append(f"{table}: {count(conn, table)} rows visible, tenant A has {own[table]}")
    assert not failures, "\n".join(failures)


def test_tenant_a_cannot_change_or_delete_tenant_b_rows(case):
    db, kind = case
    failures = []
    with db.connect() as admin:
        tables = parent_tables(admin)
        privileges = {t: table_privileges(admin, db.role(kind), t) for t in tables}
    keys = {t: b_key(db, t) for t in tables}
    with tenant_session(db, kind) as conn:
        for table in tables:
            by_key = key_match(table.primary_key)
            statements = {
                "UPDATE": [
                    (
                        sql.SQL("UPDATE {} SET tenant_id = %s WHERE {}").format(table.ident, by_key),
                        [TENANT_A, *keys[table]],
                    ),
                    (
                        sql.SQL("UPDATE {} SET tenant_id = %s WHERE tenant_id = %s").format(table.ident),
                        [TENANT_A, TENANT_B],
                    ),
                ],
                "DELETE": [
                    (sql.SQL("DELETE FROM {} WHERE {}").format(table.ident, by_key), list(keys[table])),
                    (sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(table.ident), [TENANT_B]),
                ],
            }
            for verb, attempts in statements.items():
                for query, params in attempts:
                    if not {verb, "SELECT"} <= privileges[table]:
                        exc = error_of(conn, query, params)
                        if not is_permission_refusal(exc):
                            failures.append(f"{table}: {verb} without the privilege gave {exc!r}")
                        continue
                    touched = conn.execute(query, params).rowcount
                    if touched:
                        failures.append(f"{table}: {verb} touched {touched} rows of tenant B")
            exc = error_of(conn, sql.SQL("TRUNCATE {}").format(table.ident))
            if not is_permission_refusal(exc):
                failures.append(f"{table}: TRUNCATE gave {exc!r}")
    assert not failures, "\n".join(failures)


def test_tenant_a_cannot_insert_for_or_move_rows_to_tenant_b(case):
    db, kind = case
    failures = []
    with db.connect() as admin:
        tables = parent_tables(admin)
        privileges = {t: table_privileges(admin, db.role(kind), t) for t in tables}
    rows = {t: a_row_as_b(db, t) for t in tables}
    with db.connect() as admin:
        own_keys = {t: key_of(admin, t, TENANT_A, t.primary_key) for t in tables}
    with tenant_session(db, kind) as conn:
        for table in tables:
            insert = sql.SQL(
                "INSERT INTO {t} OVERRIDING SYSTEM VALUE SELECT (jsonb_populate_record(NULL::{t}, %s::jsonb)).*"
            ).format(t=table.ident)
            exc = error_of(conn, insert, [rows[table]])
            wanted = is_rls_refusal if "INSERT" in privileges[table] else is_permission_refusal
            if not wanted(exc):
                failures.append(f"{table}: inserting a row of tenant B gave {exc!r}")
            move = sql.SQL("UPDATE {} SET tenant_id = %s WHERE {}").format(
                table.ident, key_match(table.primary_key)
            )
            exc = error_of(conn, move, [TENANT_B, *own_keys[table]])
            wanted = is_rls_refusal if {"UPDATE", "SELECT"} <= privileges[table] else is_permission_refusal
            if not wanted(exc):
                failures.append(f"{table}: moving a row of tenant A to tenant B gave {exc!r}")
    assert not failures, "\n".join(failures)


def test_tables_without_a_tenant_are_shared_reference_data_read_only(case):
    """A table without tenant_id is every tenant's: the role may only read it, and only in `platform`.
    Views run as their owner (past RLS), so none may be reachable at all."""
    db, kind = case
    with db.connect() as admin:
        rows = admin.execute(
            """SELECT n.nspname, c.relname, c.relkind::text,
                      ARRAY(SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',
                                                       'REFERENCES', 'TRIGGER']) AS p
                             WHERE has_table_privilege(%(role)s, c.oid, p)),
                      EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
                                                             AND NOT a.attisdropped),
                      c.relrowsecurity AND c.relforcerowsecurity
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname <> ALL (%(system)s)
                  AND n.nspname NOT LIKE 'pg\\_%%'""",
            {"role": db.role(kind), "system": list(SYSTEM_SCHEMAS)},
        ).fetchall()
    bad = []
    for schema, name, relkind, privileges, tenant, forced in rows:
        if not privileges or (tenant and relkind in ("r", "p")):
            continue
        if f"{schema}.{name}" in OWN_POLICY_TABLES and forced:
            continue
        if kind in RECORD_TABLES.get(f"{schema}.{name}", ()) and privileges == ["SELECT"] and not tenant:
            continue
        if relkind not in ("r", "p"):
            bad.append(f"{schema}.{name} ({relkind}): {', '.join(privileges)} on a view or foreign table")
        elif schema not in SHARED_SCHEMAS or privileges != ["SELECT"]:
            bad.append(f"{schema}.{name}: {', '.join(privileges)} on a table without tenant_id")
    assert not bad, "\n".join(bad)


def test_tenant_a_cannot_reach_tenant_b_users(tiers):
    """app.users is fenced by membership (tenant_users), not by a tenant_id of its own."""
    db = tiers["oltp"]
    with db.connect() as admin:
        members = {
            tenant: [
                r[0]
                for r in admin.execute("SELECT user_id FROM app.tenant_users WHERE tenant_id = %s", [tenant])
            ]
            for tenant in (TENANT_A, TENANT_B)
        }
    assert members[TENANT_B]
    for kind in TENANT_FACING:
        with tenant_session(db, kind) as conn:
            assert sorted(r[0] for r in conn.execute("SELECT id FROM app.users")) == sorted(members[TENANT_A])
            for statement in (
                "UPDATE app.users SET name = 'stolen' WHERE id = ANY (%s)",
                "DELETE FROM app.users WHERE id = ANY (%s)",
            ):
                if kind == "readonly":
                    assert is_permission_refusal(error_of(conn, statement, [members[TENANT_B]])), statement
                else:
                    assert conn.execute(statement, [members[TENANT_B]]).rowcount == 0, statement
            # Claiming to be B's user (the setting is the application's word) still cannot make a row of B's.
            exc = error_of(
                conn, "INSERT INTO app.users (id, email) VALUES (%s, 'x@example.com')", [members[TENANT_B][0]]
            )
            assert (is_rls_refusal if kind == "app" else is_permission_refusal)(exc), f"{kind}: {exc!r}"


def test_partitions_are_reached_through_their_parent_only(case):
    db, kind = case
    with db.connect() as admin:
        partitions = [t for t in tenant_tables(admin) if t.partition]
        held = {str(t): table_privileges(admin, db.role(kind), t) for t in partitions}
    assert {name: p for name, p in held.items() if p} == {}


def test_oltp_fleet_tables_are_out_of_reach(tiers):
    db = tiers["oltp"]
    for kind in TENANT_FACING:
        with db.connect() as admin:
            fleet = admin.execute(
                "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'fleet'::regnamespace AND c.relkind = 'r'"
            ).fetchall()
            usage = admin.execute(
                "SELECT has_schema_privilege(%s, 'fleet', 'USAGE')", [db.role(kind)]
            ).fetchone()
            assert {row[0] for row in fleet} >= {"vps_instances", "smtp_ip_addresses"}
            assert usage == (False,), f"{kind} may use schema fleet"
            for (name,) in fleet:
                assert table_privileges(admin, db.role(kind), Table("fleet", name, False, ())) == set()
            assert admin.execute(
                "SELECT count(*) FROM pg_class WHERE relnamespace = 'platform'::regnamespace "
                "AND relname IN ('vps_instances', 'smtp_ip_addresses')"
            ).fetchone() == (0,)
        with tenant_session(db, kind) as conn:
            for (name,) in fleet:
                exc = error_of(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("fleet", name)))
                assert is_permission_refusal(exc), f"{kind} reading fleet.{name}: {exc!r}"


def test_oltp_app_still_assigns_fleet_ips_through_the_foreign_key(tiers):
    """Referential checks run as the referenced table's owner: no right on `fleet` is needed to insert."""
    db = tiers["oltp"]
    with db.connect() as admin:
        ip = admin.execute("SELECT id FROM fleet.smtp_ip_addresses LIMIT 1").fetchone()[0]
        domain = admin.execute("SELECT id FROM app.domains WHERE tenant_id = %s", [TENANT_A]).fetchone()[0]
    with tenant_session(db, "app") as conn:
        conn.execute("DELETE FROM app.domain_ip_assignments")
        conn.execute(
            "INSERT INTO app.domain_ip_assignments (tenant_id, domain_id, smtp_ip_address_id) VALUES (%s, %s, %s)",
            [TENANT_A, domain, ip],
        )
        exc = error_of(
            conn,
            "INSERT INTO app.domain_ip_assignments (tenant_id, domain_id, smtp_ip_address_id) VALUES (%s, %s, %s)",
            [TENANT_A, domain, uuid.uuid4()],
        )
        assert isinstance(exc, errors.ForeignKeyViolation), exc


def test_analytics_app_appends_audit_rows_and_cannot_read_or_rewrite_them(tiers):
    db = tiers["analytics"]
    table = Table("audit", "admin_audit_log", False, ("tenant_id", "id"))
    with db.connect() as admin:
        assert table_privileges(admin, db.role("app"), table) == {"INSERT"}
        assert table_privileges(admin, db.role("readonly"), table) == {"SELECT"}
        own = key_of(admin, table, TENANT_A, table.primary_key)
    with tenant_session(db, "app") as conn:
        conn.execute(
            "INSERT INTO audit.admin_audit_log (tenant_id, admin_user_id, action, resource_type) "
            "VALUES (%s, %s, 'suspend', 'campaign')",
            [TENANT_A, uuid.uuid4()],
        )
        for statement in (
            "UPDATE audit.admin_audit_log SET action = 'nothing' WHERE tenant_id = %s AND id = %s",
            "DELETE FROM audit.admin_audit_log WHERE tenant_id = %s AND id = %s",
            "SELECT * FROM audit.admin_audit_log WHERE tenant_id = %s AND id = %s",
        ):
            exc = error_of(conn, statement, list(own))
            assert is_permission_refusal(exc), f"{statement}: {exc!r}"
        assert is_permission_refusal(error_of(conn, "TRUNCATE audit.admin_audit_log"))
        # RETURNING reads the row back: refused too, so the app cannot read the trail that way either.
        exc = error_of(
            conn,
            "INSERT INTO audit.admin_audit_log (tenant_id, admin_user_id, action, resource_type) "
            "VALUES (%s, %s, 'x', 'y') RETURNING old_values",
            [TENANT_A, uuid.uuid4()],
        )
        assert is_permission_refusal(exc), exc
    with db.connect() as admin:
        assert admin.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'app'::regnamespace AND relname = 'admin_audit_log'"
        ).fetchone() == (0,)


# -------------------------------------------------------------------------------- roles, schemas, TEMP


def test_no_tenant_facing_role_can_become_another_role(case):
    db, kind = case
    # The tier's other roles, the server's admin, and the built-in roles that read or write everything.
    others = [db.role(k) for k in ("migrator", *duties_for(db.tier)) if k != kind and k not in db.missing]
    others += [db.target.user, "pg_read_all_data", "pg_write_all_data", "pg_database_owner"]
    with db.connect() as admin:
        members = admin.execute(
            "SELECT b.rolname FROM pg_roles b WHERE pg_has_role(%s, b.oid, 'MEMBER') AND b.rolname <> %s",
            [db.role(kind), db.role(kind)],
        ).fetchall()
    assert members == [], f"{db.role(kind)} is a member of {members}"
    with db.connect(kind) as conn:
        for role in others:
            for statement in ("SET ROLE {}", "SET SESSION AUTHORIZATION {}"):
                exc = error_of(conn, sql.SQL(statement).format(sql.Identifier(role)))
                assert isinstance(exc, errors.InsufficientPrivilege), f"{statement.format(role)}: {exc!r}"


def test_no_tenant_facing_role_can_create_objects_anywhere(case):
    db, kind = case
    with db.connect() as admin:
        schemas = [
            row[0]
            for row in admin.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_toast%%' AND nspname NOT LIKE "
                "'pg\\_temp\\_%%' ORDER BY 1"
            )
        ]
        creatable = admin.execute(
            "SELECT nspname FROM pg_namespace WHERE has_schema_privilege(%s, oid, 'CREATE')", [db.role(kind)]
        ).fetchall()
        database = admin.execute(
            "SELECT has_database_privilege(%s, current_database(), 'CREATE'), "
            "has_database_privilege(%s, current_database(), 'TEMPORARY')",
            [db.role(kind), db.role(kind)],
        ).fetchone()
        tables = parent_tables(admin)
    assert creatable == [] and database == (False, False), (creatable, database)
    failures = []
    with tenant_session(db, kind) as conn:
        for schema in schemas:
            s = sql.Identifier(schema)
            for statement in (
                sql.SQL("CREATE TABLE {}.pm_attack (i int)").format(s),
                sql.SQL("CREATE VIEW {}.pm_attack AS SELECT 1 AS i").format(s),
                sql.SQL("CREATE FUNCTION {}.pm_attack() RETURNS int LANGUAGE sql AS 'SELECT 1'").format(s),
            ):
                exc = error_of(conn, statement)
                if not isinstance(exc, errors.InsufficientPrivilege):
                    failures.append(f"{statement.as_string(conn)}: {exc!r}")
        for statement in (
            "CREATE SCHEMA pm_attack",
            "CREATE TEMP TABLE pm_attack (i int)",
            "CREATE FUNCTION pg_temp.pm_attack() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        ):
            exc = error_of(conn, statement)
            if not isinstance(exc, errors.InsufficientPrivilege):
                failures.append(f"{statement}: {exc!r}")
        # The fence itself is the owner's: no role may loosen, drop or add to it.
        for table in tables:
            for statement in (
                sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY"),
                sql.SQL("DROP POLICY tenant_fence ON {}"),
                sql.SQL("CREATE POLICY pm_attack ON {} USING (true)"),
            ):
                exc = error_of(conn, statement.format(table.ident))
                if not isinstance(exc, errors.InsufficientPrivilege):
                    failures.append(f"{statement.format(table.ident).as_string(conn)}: {exc!r}")
    assert not failures, "\n".join(failures)


def test_definer_functions_a_role_can_execute_ignore_temporary_objects(case):
    """No tenant-facing role has TEMPORARY (tested above), and every SECURITY DEFINER function it may run
    searches pg_temp last, so even a role that had it could not shadow what the function reads."""
    db, kind = case
    with db.connect() as admin, catalog.pinned_search_path(admin):
        rows = admin.execute(
            """SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p
                WHERE p.prosecdef AND has_function_privilege(%s, p.oid, 'EXECUTE')""",
            [db.role(kind)],
        ).fetchall()
    bad = []
    for name, config in rows:
        path = next((c.split("=", 1)[1] for c in config or [] if c.startswith("search_path=")), None)
        parts = [p.strip().strip('"') for p in (path or "").split(",")]
        if path is None or parts[-1] != "pg_temp":
            bad.append(f"{name}: search_path {path!r} does not end with pg_temp")
    assert not bad, "\n".join(bad)


def test_a_fresh_tier_has_no_role_drift(case):
    db, kind = case
    with db.connect() as admin:
        problems = pg_admin.role_problems(
            admin, db.role(kind), db.role("migrator"), grants_for(db.tier, kind)
        )
    assert problems == []


# --------------------------------------------------------------------------------------------- functions


@dataclass
class Session:
    """A session of tenant A as ``role`` for one function attack.

    ``conn`` is an admin connection inside one transaction that took the role with ``SET LOCAL ROLE`` (and
    the role's settings), so every privilege and policy is the role's; :meth:`truth` steps out of the role
    for a moment, still inside the transaction, and sees everything, uncommitted changes included. The
    transaction is rolled back afterwards, so attacks may enqueue, replay or delete freely.
    """

    db: TierDb
    kind: str
    conn: psycopg.Connection

    @property
    def role(self) -> str:
        return self.db.role(self.kind)

    def error(self, query: sql.Composable | str, params: list | None = None) -> psycopg.Error | None:
        return error_of(self.conn, query, params)

    def rows(self, query: sql.Composable | str, params: list | None = None) -> list[tuple]:
        with self.conn.transaction():
            return self.conn.execute(query, params).fetchall()

    @contextmanager
    def truth(self) -> Iterator[psycopg.Connection]:
        """The admin's view inside the same transaction (RLS does not apply to a superuser)."""
        self.conn.execute("RESET ROLE")
        try:
            yield self.conn
        finally:
            self.conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(self.role)))

    def keys_of(self, table: str, tenant: uuid.UUID = TENANT_B) -> list[tuple]:
        """Primary keys of ``tenant``'s rows in ``table`` (``schema.name``), from the truth."""
        schema, name = table.split(".")
        with self.truth() as admin:
            found = next(t for t in tenant_tables(admin) if (t.schema, t.name) == (schema, name))
            query = sql.SQL("SELECT {} FROM {} WHERE tenant_id = %s").format(
                sql.SQL(", ").join(map(sql.Identifier, found.primary_key)), found.ident
            )
            return admin.execute(query, [tenant]).fetchall()

    def tenant_digest(self, tenant: uuid.UUID = TENANT_B) -> dict[str, str]:
        """An md5 of ``tenant``'s rows in every tenant table, from the truth."""
        with self.truth() as admin:
            digest = {}
            for table in parent_tables(admin):
                query = sql.SQL(
                    "SELECT md5(coalesce(string_agg(to_jsonb(t)::text, ',' ORDER BY to_jsonb(t)::text), '')) "
                    "FROM {} t WHERE tenant_id = %s"
                ).format(table.ident)
                digest[str(table)] = admin.execute(query, [tenant]).fetchone()[0]
            return digest

    def mentions_b(self, rows: list[tuple]) -> bool:
        """True when a result shows tenant B's id (the usual tell of a leaked row)."""
        return str(TENANT_B) in repr(rows) or repr(TENANT_B) in repr(rows)


@contextmanager
def function_session(db: TierDb, kind: str) -> Iterator[Session]:
    with db.connect() as admin, admin.transaction(force_rollback=True):
        settings = admin.execute(
            """SELECT unnest(s.setconfig) FROM pg_db_role_setting s
                WHERE s.setrole = (SELECT oid FROM pg_roles WHERE rolname = %s) AND s.setdatabase = 0""",
            [db.role(kind)],
        ).fetchall()
        for (item,) in settings:
            key, _, value = item.partition("=")
            if key != "default_transaction_read_only":  # READ WRITE: only privileges may stop a write
                admin.execute("SELECT set_config(%s, %s, true)", [key, value])
        admin.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(db.role(kind))))
        set_tenant(admin, TENANT_A)
        yield Session(db, kind, admin)


# A function attack gets a Session of tenant A and raises AssertionError when the function gave it anything
# of tenant B. Independently of the case, the harness checks that no row of B changed (tenant_digest before and
# after). Keys: (tier or "*" for every tier, signature as pg_catalog-pinned regprocedure text, e.g.
# "app.enqueue_job(text,jsonb,integer,timestamp with time zone,integer)"). Register with @attack(...).
FunctionAttack = Callable[[Session], None]
FUNCTION_ATTACKS: dict[tuple[str, str], FunctionAttack] = {}


def attack(tier: str, signature: str) -> Callable[[FunctionAttack], FunctionAttack]:
    def register(function: FunctionAttack) -> FunctionAttack:
        assert (tier, signature) not in FUNCTION_ATTACKS, f"two attack cases for {tier} {signature}"
        FUNCTION_ATTACKS[(tier, signature)] = function
        return function

    return register


def attack_for(tier: str, signature: str) -> FunctionAttack | None:
    return FUNCTION_ATTACKS.get((tier, signature)) or FUNCTION_ATTACKS.get(("*", signature))


@attack("*", "app_private.current_tenant_id()")
def _current_tenant_is_the_sessions(s: Session) -> None:
    """It reads the transaction's setting and nothing else: A's session gets A, and no argument steers it."""
    assert s.rows("SELECT app_private.current_tenant_id()") == [(TENANT_A,)]
    with s.truth() as admin:
        definer = admin.execute(
            "SELECT prosecdef FROM pg_proc WHERE oid = 'app_private.current_tenant_id()'::regprocedure"
        ).fetchone()[0]
    assert not definer, "the tenant function must run with the caller's rights"


@attack("oltp", "app_private.current_user_id()")
def _current_user_is_the_sessions(s: Session) -> None:
    user = uuid.uuid4()
    s.conn.execute("SELECT set_config('app.user_id', %s, true)", [str(user)])
    assert s.rows("SELECT app_private.current_user_id()") == [(user,)]
    with s.truth() as admin:
        assert not admin.execute(
            "SELECT prosecdef FROM pg_proc WHERE oid = 'app_private.current_user_id()'::regprocedure"
        ).fetchone()[0]


@attack("content", "app.count_expired_content(timestamp with time zone)")
def _expired_content_counts_the_tenants_own(s: Session) -> None:
    future = "infinity"
    with s.truth() as admin:
        own = admin.execute(
            "SELECT count(*) FROM app.content_objects WHERE tenant_id = %s", [TENANT_A]
        ).fetchone()[0]
    assert s.rows("SELECT app.count_expired_content(%s::timestamptz)", [future]) == [(own,)]
    with s.truth() as admin:
        definer = admin.execute(
            "SELECT prosecdef FROM pg_proc "
            "WHERE oid = 'app.count_expired_content(timestamp with time zone)'::regprocedure"
        ).fetchone()[0]
    assert not definer, "it must count under the caller's RLS"


@attack("queue", "app_private.is_owner_of(regclass)")
@attack("oltp", "app_private.is_owner_of(regclass)")  # the reputation writer's owner path (oltp 0009)
def _the_session_owns_no_queue_table(s: Session) -> None:
    with s.truth() as admin:
        tables = [str(t) for t in parent_tables(admin)]
    for table in tables:
        assert s.rows("SELECT app_private.is_owner_of(%s::regclass)", [table]) == [(False,)], table


@attack("content", "app_private.in_retention_run(regclass)")
@attack("analytics", "app_private.in_retention_run(regclass)")
@attack("queue", "app_private.in_retention_run(regclass)")
def _the_session_is_never_a_retention_run(s: Session) -> None:
    """The retention run's gate (schemas/shared/retention.sql): the role cannot mark its transaction, and even
    in a transaction marked for it (as inside retention.purge_batch) the gate is false for a tenant role and
    no row of B shows through any table the role may read."""
    assert s.error("INSERT INTO internal.retention_active VALUES (pg_current_xact_id())") is not None
    with s.truth() as admin:
        tables = parent_tables(admin)
        admin.execute("INSERT INTO internal.retention_active VALUES (pg_current_xact_id())")
    for table in tables:
        assert s.rows("SELECT app_private.in_retention_run(%s::regclass)", [str(table)]) == [(False,)], table
        query = sql.SQL("SELECT DISTINCT tenant_id FROM {}").format(table.ident)
        if s.error(query) is None:  # readable by this role (the app's audit trail is append-only)
            assert not s.mentions_b(s.rows(query)), table


def _enqueue_as_a(s: Session, signature_call: str, params: list) -> list[int]:
    """Enqueue through the tenant function while trying to steer it at B; the rows must be A's only."""
    with s.truth() as admin:
        queue = admin.execute(
            "SELECT name FROM platform.job_queues WHERE is_active ORDER BY name LIMIT 1"
        ).fetchone()[0]
    rows = s.rows(signature_call, [queue, *params])
    ids = list(rows[0][0]) if isinstance(rows[0][0], list) else [rows[0][0]]
    with s.truth() as admin:
        owners = {
            r[0]
            for r in admin.execute(
                "SELECT tenant_id FROM app.jobs WHERE id = ANY (%s) "
                "UNION ALL SELECT tenant_id FROM app.scheduled_jobs WHERE id = ANY (%s)",
                [ids, ids],
            )
        }
    assert owners == {TENANT_A}, f"enqueued for {owners}"
    return ids


@attack("queue", "app.enqueue_jobs(text,jsonb[],integer,timestamp with time zone,integer)")
def _enqueue_jobs_writes_only_the_sessions_tenant(s: Session) -> None:
    # A payload that names B changes nothing: the tenant comes from the session, never from an argument.
    smuggled = psycopg.types.json.Jsonb({"tenant_id": str(TENANT_B)})
    _enqueue_as_a(s, "SELECT app.enqueue_jobs(%s, ARRAY[%s]::jsonb[], NULL, NULL, NULL)", [smuggled])
    _enqueue_as_a(
        s,
        "SELECT app.enqueue_jobs(%s, ARRAY[%s]::jsonb[], NULL, now() + interval '1 hour', NULL)",
        [smuggled],
    )
    s.conn.execute("SELECT set_config('app.tenant_id', '', true)")
    exc = s.error("SELECT app.enqueue_jobs('x', ARRAY['{}'::jsonb])")
    assert isinstance(exc, errors.InsufficientPrivilege | errors.InvalidParameterValue), repr(exc)
    s.conn.execute("SELECT set_config('app.tenant_id', %s, true)", [str(TENANT_A)])
    exc = s.error("SELECT app.enqueue_jobs(name, ARRAY['{}'::jsonb], 0) FROM platform.job_queues LIMIT 1")
    assert isinstance(exc, errors.InvalidParameterValue), f"a tenant jumped the queue: {exc!r}"


@attack("queue", "app.enqueue_job(text,jsonb,integer,timestamp with time zone,integer)")
def _enqueue_job_writes_only_the_sessions_tenant(s: Session) -> None:
    _enqueue_as_a(s, "SELECT app.enqueue_job(%s, %s, NULL, NULL, NULL)", [psycopg.types.json.Jsonb({})])


@attack("queue", "app.job_status(bigint)")
def _job_status_shows_only_the_sessions_jobs(s: Session) -> None:
    with s.truth() as admin:
        theirs = [
            r[0]
            for r in admin.execute(
                "SELECT id FROM app.jobs WHERE tenant_id = %s UNION ALL SELECT id FROM app.dead_letters "
                "WHERE tenant_id = %s UNION ALL SELECT id FROM app.scheduled_jobs WHERE tenant_id = %s",
                [TENANT_B] * 3,
            )
        ]
    assert theirs, "tenant B has no queue rows to probe"
    for job in theirs:
        assert s.rows("SELECT state FROM app.job_status(%s)", [job]) == [(None,)], job


def executable_functions(db: TierDb, kind: str) -> list[tuple[str, bool, bool]]:
    """(signature, SECURITY DEFINER, returns trigger) of every function ``kind`` may execute, extensions' aside."""
    with db.connect() as admin, catalog.pinned_search_path(admin):
        return admin.execute(
            """SELECT p.oid::regprocedure::text, p.prosecdef,
                      p.prorettype IN ('trigger'::regtype, 'event_trigger'::regtype)
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname <> ALL (%s) AND n.nspname NOT LIKE 'pg\\_%%'
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                                     AND d.objid = p.oid AND d.deptype = 'e')
                  AND has_function_privilege(%s, p.oid, 'EXECUTE')
                ORDER BY 1""",
            [list(SYSTEM_SCHEMAS), db.role(kind)],
        ).fetchall()


# Tiers whose functions' attack cases are still being written: the inventory test is an expected failure
# there until every function has one (then it passes; delete the entry).
PENDING_CASES: dict[str, str] = {}


def test_every_executable_function_has_an_attack_case(case):
    db, kind = case
    missing = []
    for signature, definer, trigger in executable_functions(db, kind):
        if attack_for(db.tier, signature) is not None:
            continue
        if trigger and not definer:
            continue  # runs only as a trigger, with the statement's rights: the table attacks cover it
        missing.append(f"{signature}{' (SECURITY DEFINER)' if definer else ''}")
    if missing and db.tier in PENDING_CASES:
        pytest.xfail(f"{PENDING_CASES[db.tier]}; missing: {', '.join(missing)}")
    assert not missing, (
        f"{db.role(kind)} may execute functions without an attack case in FUNCTION_ATTACKS "
        "(tests/integration/test_postgres_attacks.py):\n  " + "\n  ".join(missing)
    )


def test_no_executable_extension_function_runs_as_its_owner(case):
    db, kind = case
    with db.connect() as admin, catalog.pinned_search_path(admin):
        rows = admin.execute(
            """SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_depend d
                   ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
                WHERE p.prosecdef AND has_function_privilege(%s, p.oid, 'EXECUTE')""",
            [db.role(kind)],
        ).fetchall()
    assert rows == []


def test_no_function_gives_tenant_a_anything_of_tenant_b(case):
    db, kind = case
    failures = []
    for signature, definer, trigger in executable_functions(db, kind):
        function = attack_for(db.tier, signature)
        if function is None:
            if trigger and not definer:
                with function_session(db, kind) as s:
                    exc = s.error(sql.SQL("SELECT {}").format(sql.SQL(_call_with_nulls(signature))))
                if not isinstance(exc, errors.FeatureNotSupported | errors.UndefinedFunction):
                    failures.append(f"{signature}: a trigger function called directly gave {exc!r}")
            continue  # missing cases fail test_every_executable_function_has_an_attack_case
        with function_session(db, kind) as s:
            before = s.tenant_digest()
            try:
                with s.conn.transaction():
                    function(s)
            except AssertionError as exc:
                failures.append(f"{signature}: {exc}")
            except psycopg.Error as exc:
                failures.append(f"{signature}: the attack case failed with {exc!r}")
            changed = sorted(t for t, d in s.tenant_digest().items() if before.get(t) != d)
            if changed:
                failures.append(f"{signature}: tenant B's rows changed in {', '.join(changed)}")
    assert not failures, "\n".join(failures)


def _call_with_nulls(signature: str) -> str:
    name, _, args = signature.partition("(")
    count_ = len([a for a in args.rstrip(")").split(",") if a.strip()])
    return f"{name}({', '.join(['NULL'] * count_)})"


# ------------------------------------------------------------------------------------- the queue worker


@pytest.fixture(scope="module")
def worker_db(tiers) -> Iterator[TierDb]:
    """The queue tier with its worker role (a scratch one with a stand-in schema before schemas/queue/0004)."""
    if "worker" not in tiers["queue"].missing:
        yield tiers["queue"]
        return
    db = provision_queue_with_worker()
    try:
        yield db
    finally:
        teardown(db)


def test_the_worker_role_exists_only_in_the_queue_tier(tiers):
    for tier, db in tiers.items():
        assert ("worker" in duties_for(tier)) == (tier == "queue")
        with db.connect() as admin:
            exists = admin.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname = %s", [db.role("worker")]
            ).fetchone()
        assert exists == ((1,) if tier == "queue" and "worker" not in db.missing else (0,)), tier


def test_the_worker_role_executes_worker_functions_and_touches_no_table(worker_db):
    db = worker_db
    role = db.role("worker")
    with db.connect() as admin:
        live = pg_admin.role_get(admin, role)
        assert pg_admin.role_flag_problems(live, login=True) == []
        assert live["connection_limit"] == 64
        assert live["settings"]["search_path"].replace('"', "") == "worker, pg_catalog"
        assert pg_admin.role_problems(admin, role, db.role("migrator"), grants_for("queue", "worker")) == []
        relations = admin.execute(
            """SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname <> ALL (%s) AND n.nspname NOT LIKE 'pg\\_%%'
                  AND (has_table_privilege(%s, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                       OR (c.relkind = 'S' AND has_sequence_privilege(%s, c.oid, 'USAGE, SELECT, UPDATE')))""",
            [list(SYSTEM_SCHEMAS), role, role],
        ).fetchall()
        assert relations == [], f"the worker role reaches tables: {relations}"
        usable = admin.execute(
            "SELECT nspname FROM pg_namespace WHERE nspowner = (SELECT oid FROM pg_roles WHERE rolname = %s) "
            "AND (has_schema_privilege(%s, oid, 'USAGE') OR has_schema_privilege(%s, oid, 'CREATE'))",
            [db.role("migrator"), role, role],
        ).fetchall()
        assert usable == [("worker",)]
    functions = executable_functions(db, "worker")
    assert functions, "the worker role may execute no function"
    assert {signature.split(".", 1)[0] for signature, _d, _t in functions} == {"worker"}, functions
    with db.connect("worker") as conn:
        assert is_permission_refusal(error_of(conn, "SELECT count(*) FROM app.jobs"))
        assert is_permission_refusal(error_of(conn, "CREATE TEMP TABLE pm_attack (i int)"))
        exc = error_of(conn, sql.SQL("SET ROLE {}").format(sql.Identifier(db.role("migrator"))))
        assert isinstance(exc, errors.InsufficientPrivilege), exc


def test_tenant_facing_roles_cannot_execute_worker_functions(worker_db):
    db = worker_db
    for kind in TENANT_FACING:
        with db.connect() as admin:
            reachable = admin.execute(
                """SELECT p.oid::regprocedure::text FROM pg_proc p
                    WHERE p.pronamespace = 'worker'::regnamespace AND has_function_privilege(%s, p.oid, 'EXECUTE')""",
                [db.role(kind)],
            ).fetchall()
            usage = admin.execute(
                "SELECT has_schema_privilege(%s, 'worker', 'USAGE')", [db.role(kind)]
            ).fetchone()
        assert reachable == [] and usage == (False,), (kind, reachable, usage)


def test_the_reputation_role_executes_reputation_functions_and_touches_no_table(tiers):
    """The DNSBL checker's role (oltp only): EXECUTE on schema reputation's functions, no table, no other
    schema, no temporary objects, and no tenant-facing role reaches those functions."""
    for tier in tiers:
        assert ("reputation" in duties_for(tier)) == (tier == "oltp")
    db = tiers["oltp"]
    role = db.role("reputation")
    with db.connect() as admin:
        live = pg_admin.role_get(admin, role)
        assert pg_admin.role_flag_problems(live, login=True) == []
        assert (
            pg_admin.role_problems(admin, role, db.role("migrator"), grants_for("oltp", "reputation")) == []
        )
        relations = admin.execute(
            """SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname <> ALL (%s) AND n.nspname NOT LIKE 'pg\\_%%'
                  AND (has_table_privilege(%s, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                       OR (c.relkind = 'S' AND has_sequence_privilege(%s, c.oid, 'USAGE, SELECT, UPDATE')))""",
            [list(SYSTEM_SCHEMAS), role, role],
        ).fetchall()
        assert relations == [], f"the reputation role reaches tables: {relations}"
        usable = admin.execute(
            "SELECT nspname FROM pg_namespace WHERE nspowner = (SELECT oid FROM pg_roles WHERE rolname = %s) "
            "AND (has_schema_privilege(%s, oid, 'USAGE') OR has_schema_privilege(%s, oid, 'CREATE'))",
            [db.role("migrator"), role, role],
        ).fetchall()
        assert usable == [("reputation",)]
        for kind in TENANT_FACING:
            usage = admin.execute(
                "SELECT has_schema_privilege(%s, 'reputation', 'USAGE')", [db.role(kind)]
            ).fetchone()
            assert usage == (False,), kind
    functions = executable_functions(db, "reputation")
    assert {signature.split(".", 1)[0] for signature, _d, _t in functions} == {"reputation"}, functions
    with db.connect("reputation") as conn:
        assert is_permission_refusal(error_of(conn, "SELECT count(*) FROM fleet.smtp_ip_addresses"))
        assert is_permission_refusal(error_of(conn, "CREATE TEMP TABLE pm_attack (i int)"))
        exc = error_of(conn, sql.SQL("SET ROLE {}").format(sql.Identifier(db.role("migrator"))))
        assert isinstance(exc, errors.InsufficientPrivilege), exc
