"""Tenant isolation on a real PostgreSQL: every tenant table, found in the catalog, tried as the app role.

The four tiers are provisioned exactly as the component does it (roles, database, migrations, grants) under
a random prefix on the devenv server, and tenants A and B are seeded into every tenant table as the app
role. The tables under test come from the catalog, never from a list in this file: a new tenant table is
tested the moment a migration creates it, and fails here until the seed gives it rows.
"""

from __future__ import annotations

import pytest
from psycopg import errors, sql

from tests.support.postgres import TierDb, provision, seed_tenants, teardown
from tests.support.rls import (
    TENANT_A,
    TENANT_B,
    Table,
    count,
    error_of,
    key_match,
    key_of,
    set_tenant,
    table_privileges,
    tenant_tables,
)

pytestmark = pytest.mark.services

TIERS = ("oltp", "content", "analytics", "queue")


@pytest.fixture(scope="module")
def tiers(devenv_env) -> dict[str, TierDb]:
    created: dict[str, TierDb] = {}
    try:
        for tier in TIERS:
            created[tier] = provision(tier)
            seed_tenants(created[tier], [TENANT_A, TENANT_B])
        yield created
    finally:
        for db in created.values():
            teardown(db)


@pytest.fixture(params=TIERS)
def tier(request, tiers) -> TierDb:
    return tiers[request.param]


# The tiers whose app role writes tables itself; the queue's writes only through its functions, which
# tests/integration/test_postgres_attacks.py and test_queue.py attack.
@pytest.fixture(params=[t for t in TIERS if t != "queue"])
def writing_tier(request, tiers) -> TierDb:
    return tiers[request.param]


def parents(db: TierDb, kind: str | None = None, *privileges: str) -> list[Table]:
    """The tenant tables (no partitions); with ``kind``, only those that role holds ``privileges`` on (what
    it may not touch at all is tested in test_postgres_attacks.py)."""
    with db.connect() as admin:
        tables = [t for t in tenant_tables(admin) if not t.partition]
        if kind is not None:
            tables = [t for t in tables if set(privileges) <= table_privileges(admin, db.role(kind), t)]
    assert tables, f"{db.tier}: the catalog shows no tenant table at all"
    return tables


def test_every_tenant_table_has_seed_rows_for_both_tenants(tier):
    with tier.connect() as admin:
        empty = [
            f"{table} has no rows of tenant {tenant}"
            for table in tenant_tables(admin)
            if not table.partition
            for tenant in (TENANT_A, TENANT_B)
            if count(admin, table, "tenant_id = %s", [tenant]) == 0
        ]
    assert not empty, "extend tests/support/postgres.py SEEDS:\n" + "\n".join(empty)


def test_every_tenant_table_has_forced_rls_and_a_tenant_policy(tier):
    """The catalog rule, written independently of modules/postgres/migrations.py's lint."""
    with tier.connect() as admin:
        rows = admin.execute(
            """SELECT c.oid::regclass::text, c.relrowsecurity, c.relforcerowsecurity,
                      EXISTS (SELECT 1 FROM pg_policy p
                               WHERE p.polrelid = c.oid AND NOT p.polpermissive AND p.polcmd = '*'
                                 AND pg_get_expr(p.polqual, p.polrelid) LIKE %(fence)s
                                 AND pg_get_expr(p.polwithcheck, p.polrelid) LIKE %(fence)s),
                      EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polpermissive)
                 FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
                WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')""",
            {"fence": "%tenant_id = ( SELECT app_private.current_tenant_id()%"},
        ).fetchall()
    assert rows
    bad = [
        f"{name}: enabled={enabled} forced={forced} fence={fence} permissive_policy={permissive}"
        for name, enabled, forced, fence, permissive in rows
        if not (enabled and forced and fence and permissive)
    ]
    assert not bad, "\n".join(bad)


def test_indexes_of_tenant_tables_lead_with_tenant_id(tier):
    """Exceptions are declared in the schema itself, with an index comment starting 'cross-tenant:'."""
    with tier.connect() as admin:
        rows = admin.execute(
            """SELECT ic.relname, c.oid::regclass::text, obj_description(ic.oid, 'pg_class')
                 FROM pg_index i
                 JOIN pg_class c ON c.oid = i.indrelid
                 JOIN pg_class ic ON ic.oid = i.indexrelid
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
                WHERE i.indkey[0] <> a.attnum AND NOT c.relispartition"""
        ).fetchall()
    bad = [
        f"{index} on {table}"
        for index, table, comment in rows
        if not (comment or "").startswith("cross-tenant:")
    ]
    assert not bad, "indexes not led by tenant_id: " + ", ".join(bad)


def test_application_roles_cannot_bypass_rls(tier):
    with tier.connect() as admin:
        for kind in ("app", "readonly", "migrator"):
            role = tier.role(kind)
            flags = admin.execute(
                "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = %s",
                [role],
            ).fetchone()
            assert flags == (False, False, False, False), f"{role} has a bypassing attribute: {flags}"
            members = admin.execute(
                "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE "
                "r.rolname = %s",
                [role],
            ).fetchone()[0]
            assert members == 0, f"{role} is a member of another role"
        for kind in ("app", "readonly"):
            role = tier.role(kind)
            owned = admin.execute(
                "SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles WHERE "
                "rolname = %s)",
                [role],
            ).fetchone()[0]
            assert owned == 0, f"{role} owns tables (an owner is exempt unless RLS is forced)"
            dangerous = admin.execute(
                """SELECT c.oid::regclass::text, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a
                    WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)
                      AND a.privilege_type IN ('TRUNCATE', 'REFERENCES', 'TRIGGER')""",
                [role],
            ).fetchall()
            assert dangerous == [], f"{role} holds privileges that bypass RLS: {dangerous}"


def test_security_definer_functions_pin_search_path_and_are_not_public(tier):
    with tier.connect() as admin:
        rows = admin.execute(
            """SELECT p.oid::regprocedure::text, p.proconfig,
                      has_function_privilege('public', p.oid, 'EXECUTE'),
                      has_function_privilege(%s, p.oid, 'EXECUTE')
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')""",
            [tier.role("readonly")],
        ).fetchall()
    for name, config, public, readonly in rows:
        assert any(c.startswith("search_path=") for c in config or []), f"{name} has no pinned search_path"
        assert not public, f"{name} is executable by PUBLIC"
        assert not readonly, f"{name} is executable by the readonly role"


def test_app_role_sees_only_its_own_tenant(tier):
    tables = parents(tier, "app", "SELECT")
    failures = []
    with tier.connect() as admin:
        own = {t: count(admin, t, "tenant_id = %s", [TENANT_A]) for t in tables}
        keys = {t: key_of(admin, t, TENANT_B, t.primary_key) for t in tables}
    with tier.connect("app") as app, app.transaction(force_rollback=True):
        set_tenant(app, TENANT_A)
        for table in tables:
            if count(app, table, "tenant_id = %s", [TENANT_B]) != 0:
                failures.append(f"{table}: tenant B rows visible by tenant_id")
            if count(app, table, key_match(table.primary_key).as_string(app), list(keys[table])) != 0:
                failures.append(f"{table}: tenant B row visible by primary key")
            if count(app, table) != own[table]:
                failures.append(f"{table}: sees {count(app, table)} rows, tenant A has {own[table]}")
    assert not failures, "\n".join(failures)


def test_app_role_cannot_update_or_delete_another_tenants_rows(writing_tier):
    tier = writing_tier
    tables = parents(tier, "app", "SELECT", "UPDATE", "DELETE")
    failures = []
    with tier.connect() as admin:
        before = {t: count(admin, t, "tenant_id = %s", [TENANT_B]) for t in tables}
        keys = {t: key_of(admin, t, TENANT_B, t.primary_key) for t in tables}
    with tier.connect("app") as app, app.transaction(force_rollback=True):
        set_tenant(app, TENANT_A)
        for table in tables:
            by_key = key_match(table.primary_key)
            for verb, query in (
                ("update", sql.SQL("UPDATE {} SET tenant_id = tenant_id WHERE {}")),
                ("delete", sql.SQL("DELETE FROM {} WHERE {}")),
            ):
                cursor = app.execute(query.format(table.ident, by_key), list(keys[table]))
                if cursor.rowcount != 0:
                    failures.append(
                        f"{table}: {verb} by primary key touched {cursor.rowcount} rows of tenant B"
                    )
                cursor = app.execute(query.format(table.ident, sql.SQL("tenant_id = %s")), [TENANT_B])
                if cursor.rowcount != 0:
                    failures.append(
                        f"{table}: {verb} by tenant_id touched {cursor.rowcount} rows of tenant B"
                    )
    with tier.connect() as admin:
        for table in tables:
            if count(admin, table, "tenant_id = %s", [TENANT_B]) != before[table]:
                failures.append(f"{table}: tenant B's rows changed")
    assert not failures, "\n".join(failures)


def test_app_role_cannot_insert_for_or_move_rows_to_another_tenant(writing_tier):
    tier = writing_tier
    tables = parents(tier, "app", "SELECT", "INSERT", "UPDATE")
    failures = []
    with tier.connect("app") as app, app.transaction(force_rollback=True):
        set_tenant(app, TENANT_A)
        for table in tables:
            # A copy of one of A's rows, relabelled as B's: the policy's WITH CHECK must refuse it.
            insert = sql.SQL(
                "INSERT INTO {t} OVERRIDING SYSTEM VALUE "
                "SELECT (jsonb_populate_record(NULL::{t}, to_jsonb(r) || "
                "jsonb_build_object('tenant_id', %s::uuid))).* "
                "FROM {t} r LIMIT 1"
            ).format(t=table.ident)
            exc = error_of(app, insert, [TENANT_B])
            if not isinstance(exc, errors.InsufficientPrivilege) or "row-level security" not in str(exc):
                failures.append(f"{table}: insert as tenant B gave {exc!r}, not an RLS violation")
            pk = sql.SQL(", ").join(map(sql.Identifier, table.primary_key))
            move = sql.SQL(
                "UPDATE {t} SET tenant_id = %s WHERE ({pk}) = (SELECT {pk} FROM {t} LIMIT 1)"
            ).format(t=table.ident, pk=pk)
            exc = error_of(app, move, [TENANT_B])
            if not isinstance(exc, errors.InsufficientPrivilege) or "row-level security" not in str(exc):
                failures.append(f"{table}: moving a row to tenant B gave {exc!r}, not an RLS violation")
    assert not failures, "\n".join(failures)


def test_app_role_sees_nothing_without_a_tenant(tier):
    tables = parents(tier, "app", "SELECT")
    failures = []
    with tier.connect("app") as app:
        with app.transaction():
            failures += [f"{t}: rows visible with no tenant set" for t in tables if count(app, t) != 0]
        # After a tenant transaction commits, the setting reads '' (not NULL) on this connection.
        with app.transaction():
            set_tenant(app, TENANT_A)
            assert count(app, tables[0]) > 0
        with app.transaction():
            assert app.execute("SELECT current_setting('app.tenant_id', true)").fetchone()[0] == ""
            failures += [
                f"{t}: rows visible after a tenant transaction ended" for t in tables if count(app, t) != 0
            ]
        # A malformed tenant is an error, never a wider view.
        with app.transaction():
            app.execute("SELECT set_config('app.tenant_id', 'not-a-uuid', true)")
            exc = error_of(app, sql.SQL("SELECT count(*) FROM {}").format(tables[0].ident))
            assert isinstance(exc, errors.InvalidTextRepresentation), exc
    assert not failures, "\n".join(failures)


def test_foreign_keys_cannot_reach_another_tenants_rows(tier):
    """Every composite reference between tenant tables, pointed at tenant B's parent, is refused."""
    with tier.connect() as admin:
        fks = admin.execute(
            """SELECT con.conname, cn.nspname, c.relname, pn.nspname, p.relname,
                      ARRAY(SELECT attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
                              JOIN pg_attribute ON attrelid = con.conrelid AND attnum = k.n ORDER BY k.i),
                      ARRAY(SELECT attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
                              JOIN pg_attribute ON attrelid = con.confrelid AND attnum = k.n ORDER BY k.i)
                 FROM pg_constraint con
                 JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
                 JOIN pg_class p ON p.oid = con.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
                WHERE con.contype = 'f' AND con.conparentid = 0 AND NOT c.relispartition
                  AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = c.oid AND attname = 'tenant_id')
                  AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = p.oid AND attname = 'tenant_id')"""
        ).fetchall()
        tables = {(t.schema, t.name): t for t in tenant_tables(admin)}
        updatable = {
            t for t in tables.values() if {"SELECT", "UPDATE"} <= table_privileges(admin, tier.role("app"), t)
        }
        cases = []
        for name, cschema, child, pschema, parent, columns, parent_columns in fks:
            child_table, parent_table = tables[(cschema, child)], tables[(pschema, parent)]
            if child_table not in updatable:
                continue
            target = key_of(admin, parent_table, TENANT_B, tuple(parent_columns))
            row = key_of(admin, child_table, TENANT_A, child_table.primary_key)
            cases.append((name, child_table, tuple(columns), target, row))
    if tier.tier != "queue":
        assert cases, f"{tier.tier}: expected composite references between tenant tables"
    failures = []
    with tier.connect("app") as app, app.transaction(force_rollback=True):
        set_tenant(app, TENANT_A)
        for name, child, columns, target, row in cases:
            pairs = [(c, v) for c, v in zip(columns, target, strict=True) if c != "tenant_id"]
            if not pairs:
                continue  # a reference to tenants(tenant_id) alone: pointing it at B is a move, tested above
            update = sql.SQL("UPDATE {} SET ({}) = ROW({}) WHERE {}").format(
                child.ident,
                sql.SQL(", ").join(sql.Identifier(c) for c, _ in pairs),
                sql.SQL(", ").join(sql.Placeholder() * len(pairs)),
                key_match(child.primary_key),
            )
            exc = error_of(app, update, [v for _, v in pairs] + list(row))
            if not isinstance(exc, errors.ForeignKeyViolation):
                failures.append(f"{child}.{name}: pointing at tenant B's row gave {exc!r}")
    assert not failures, "\n".join(failures)


def test_readonly_role_reads_its_tenant_and_writes_nothing(tier):
    tables = parents(tier)
    failures = []
    with tier.connect("readonly") as ro, ro.transaction(force_rollback=True):
        set_tenant(ro, TENANT_A)
        for table in tables:
            if count(ro, table, "tenant_id = %s", [TENANT_B]) != 0:
                failures.append(f"{table}: readonly sees tenant B")
            if count(ro, table) == 0:
                failures.append(f"{table}: readonly sees none of tenant A's rows")
            exc = error_of(ro, sql.SQL("DELETE FROM {} WHERE true").format(table.ident))
            if not isinstance(exc, errors.InsufficientPrivilege | errors.ReadOnlySqlTransaction):
                failures.append(f"{table}: readonly delete gave {exc!r}")
    assert not failures, "\n".join(failures)


def test_partitions_are_out_of_the_application_roles_reach(tiers):
    db = tiers["content"]
    with db.connect() as admin:
        partitions = [t for t in tenant_tables(admin) if t.partition]
    assert len(partitions) >= 8  # content_objects and attachments, four months each
    with db.connect("app") as app, app.transaction(force_rollback=True):
        set_tenant(app, TENANT_A)
        for table in partitions:
            exc = error_of(app, sql.SQL("SELECT count(*) FROM {}").format(table.ident))
            assert isinstance(exc, errors.InsufficientPrivilege), f"{table}: {exc!r}"


def test_users_are_visible_only_to_their_tenants(tiers):
    db = tiers["oltp"]
    with db.connect() as admin:
        members = {
            tenant: {
                r[0]
                for r in admin.execute("SELECT user_id FROM app.tenant_users WHERE tenant_id = %s", [tenant])
            }
            for tenant in (TENANT_A, TENANT_B)
        }
    with db.connect("app") as app, app.transaction(force_rollback=True):
        set_tenant(app, TENANT_A)
        visible = {r[0] for r in app.execute("SELECT id FROM app.users")}
        assert visible == members[TENANT_A]
        assert app.execute("DELETE FROM app.users").rowcount == 0
        exc = error_of(app, "INSERT INTO app.users (id, email) VALUES (gen_random_uuid(), 'x@example.com')")
        assert isinstance(exc, errors.InsufficientPrivilege)


def test_indexed_columns_of_tenant_tables_compare_with_leakproof_operators(tier):
    """Under RLS only LEAKPROOF operators may run before the policy, i.e. inside an index: every indexed
    column of a tenant table needs a leakproof `=` (citext's is not: a citext key lookup scans the tenant)."""
    with tier.connect() as admin:
        rows = admin.execute(
            """SELECT DISTINCT c.oid::regclass::text, a.attname, format_type(a.atttypid, NULL), p.proname
                 FROM pg_index i
                 JOIN pg_class c ON c.oid = i.indrelid AND NOT c.relispartition
                 JOIN pg_class ic ON ic.oid = i.indexrelid
                 JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
                 JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, pos) ON k.attnum > 0
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                 JOIN pg_opclass oc ON oc.oid = i.indclass[k.pos - 1]
                 JOIN pg_amop ao ON ao.amopfamily = oc.opcfamily AND ao.amopstrategy = 3
                                AND ao.amoplefttype = oc.opcintype AND ao.amoprighttype = oc.opcintype
                 JOIN pg_operator o ON o.oid = ao.amopopr
                 JOIN pg_proc p ON p.oid = o.oprcode
                WHERE NOT p.proleakproof
                  AND EXISTS (SELECT 1 FROM pg_attribute t
                               WHERE t.attrelid = c.oid AND t.attname = 'tenant_id')"""
        ).fetchall()
    assert rows == [], "indexed columns whose = is not leakproof: " + ", ".join(
        f"{table}.{column} ({kind}, {proc})" for table, column, kind, proc in rows
    )


def test_a_lookup_by_email_under_rls_is_an_index_condition(tiers):
    with tiers["oltp"].connect("app") as app, app.transaction(force_rollback=True):
        set_tenant(app, TENANT_A)
        app.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            row[0]
            for row in app.execute(
                "EXPLAIN (COSTS OFF) SELECT id FROM app.leads WHERE email = 'ada@example.org'"
            )
        )
    condition = next(line for line in plan.splitlines() if "Index Cond" in line)
    assert "tenant_id" in condition and "email" in condition, plan


def test_every_tenant_table_carries_the_parsed_fence_and_the_fingerprint_is_clean(tier):
    from modules.postgres import catalog
    from modules.postgres import migrations as mig
    from tests.support.postgres import REPO_ROOT

    with tier.connect() as admin:
        with catalog.pinned_search_path(admin):
            rows = admin.execute(
                """SELECT p.polrelid::regclass::text, pg_get_expr(p.polqual, p.polrelid),
                          pg_get_expr(p.polwithcheck, p.polrelid)
                     FROM pg_policy p WHERE p.polname = 'tenant_fence'"""
            ).fetchall()
        drift = mig.inspect(admin, mig.load_dir(REPO_ROOT / "schemas" / tier.tier)).drift
        definers = catalog.definer_problems(admin)
    assert rows
    for table, using, check in rows:
        assert catalog.fence_problem(using, table) is None, f"{table}: {using}"
        assert catalog.fence_problem(check, table) is None, f"{table}: {check}"
    assert drift == []
    # Every SECURITY DEFINER function pins search_path with pg_temp last (the queue's since 0003).
    assert definers == []
