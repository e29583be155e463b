"""Catalog-driven helpers of the tenant isolation and attack suites: tenant tables, privileges, statements.

Tables and functions always come from the catalog, never from a list, so a new object is tested the moment
a migration creates it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg
from psycopg import sql

TENANT_A, TENANT_B = uuid.UUID(int=0xA), uuid.UUID(int=0xB)
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    partition: bool
    primary_key: tuple[str, ...]

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


def tenant_tables(conn: psycopg.Connection) -> list[Table]:
    """Every table with a tenant_id column, with its primary key, straight from the catalog."""
    rows = conn.execute(
        """SELECT n.nspname, c.relname, c.relispartition,
                  ARRAY(SELECT a2.attname::text FROM pg_index i
                          JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, pos) ON true
                          JOIN pg_attribute a2 ON a2.attrelid = c.oid AND a2.attnum = k.attnum
                         WHERE i.indrelid = c.oid AND i.indisprimary ORDER BY k.pos)
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
            WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            ORDER BY 1, 2"""
    ).fetchall()
    return [Table(schema, name, partition, tuple(pk)) for schema, name, partition, pk in rows]


def parent_tables(conn: psycopg.Connection) -> list[Table]:
    return [t for t in tenant_tables(conn) if not t.partition]


def table_privileges(conn: psycopg.Connection, role: str, table: Table) -> set[str]:
    """What ``role`` may do to ``table`` (directly, through PUBLIC or a membership), by the server's answer."""
    rows = conn.execute(
        """SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES',
                                      'TRIGGER']) AS p
            WHERE has_table_privilege(%s, %s::regclass, p)""",
        [role, str(table.ident.as_string(conn))],
    ).fetchall()
    return {row[0] for row in rows}


def set_tenant(conn: psycopg.Connection, tenant: uuid.UUID) -> None:
    conn.execute("SELECT set_config('app.tenant_id', %s, true)", [str(tenant)])


def error_of(
    conn: psycopg.Connection, query: sql.Composable | str, params: list | None = None
) -> psycopg.Error | None:
    """Run one statement in a savepoint; the error it raised, or None."""
    try:
        with conn.transaction():
            conn.execute(query, params)
    except psycopg.Error as exc:
        return exc
    return None


def key_of(
    admin: psycopg.Connection, table: Table, tenant: uuid.UUID, columns: tuple[str, ...]
) -> tuple | None:
    query = sql.SQL("SELECT {} FROM {} WHERE tenant_id = %s LIMIT 1").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), table.ident
    )
    return admin.execute(query, [tenant]).fetchone()


def key_match(columns: tuple[str, ...]) -> sql.Composed:
    return sql.SQL("({}) = ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(", ").join(sql.Placeholder() * len(columns))
    )


def count(conn: psycopg.Connection, table: Table, where: str = "true", params: list | None = None) -> int:
    query = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table.ident, sql.SQL(where))
    return conn.execute(query, params).fetchone()[0]


def tenant_rows(admin: psycopg.Connection, table: Table, tenant: uuid.UUID) -> list[tuple]:
    """Every row of ``tenant`` in ``table`` as the admin sees it (a superuser is not under RLS)."""
    query = sql.SQL("SELECT to_jsonb(t)::text FROM {} t WHERE tenant_id = %s ORDER BY 1").format(table.ident)
    return admin.execute(query, [tenant]).fetchall()


def relabelled_copy(table: Table) -> sql.Composed:
    """INSERT a copy of one visible row, relabelled as the tenant in the parameter."""
    return sql.SQL(
        "INSERT INTO {t} OVERRIDING SYSTEM VALUE "
        "SELECT (jsonb_populate_record(NULL::{t}, to_jsonb(r) || "
        "jsonb_build_object('tenant_id', %s::uuid))).* "
        "FROM {t} r LIMIT 1"
    ).format(t=table.ident)


def is_rls_refusal(exc: psycopg.Error | None) -> bool:
    from psycopg import errors

    return isinstance(exc, errors.InsufficientPrivilege) and "row-level security" in str(exc)


def is_permission_refusal(exc: psycopg.Error | None) -> bool:
    """Refused by privileges (not RLS): the role may not run this statement on the object at all."""
    from psycopg import errors

    return isinstance(exc, errors.InsufficientPrivilege) and "row-level security" not in str(exc)
