"""Catalog checks of a tier database that migrations rely on: the tenant fence, and the security fingerprint.

* :func:`fence_problem` parses a policy expression (pglast, the PostgreSQL parser) and accepts only the exact
  tenant fence ``tenant_id = app_private.current_tenant_id()``; text matching let ``… OR true`` through.
* :func:`security_snapshot` fingerprints what RLS silently depends on in every managed schema: function
  definitions, SECURITY DEFINER flags, owners, ``proconfig`` (the search_path pin), grants on schemas,
  relations and functions, and triggers. :func:`security_problems` compares two fingerprints.
* :func:`definer_problems`: every SECURITY DEFINER function pins ``search_path`` with ``pg_temp`` last and is
  not executable by PUBLIC.

Expressions and names are read with ``search_path = pg_catalog`` (:func:`pinned_search_path`), so
``pg_get_expr`` and ``regprocedure`` qualify every object outside pg_catalog and an unqualified ``=`` is
pg_catalog's: the text is the same whatever session reads it, and a look-alike in another schema shows up
qualified.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from pglast import ast, parse_sql
from pglast.enums import BoolExprType, SubLinkType
from pglast.parser import ParseError

from modules.postgres.duties import duties_for

TENANT_COLUMN = "tenant_id"
TENANT_SCHEMA = "app_private"
TENANT_FUNCTION_NAME = "current_tenant_id"
OWNER_FUNCTION_NAME = "is_owner_of"
# The queue's deliberate exception (schemas/queue/0004_hybrid_queue.sql, README "How RLS is keyed"): its fence
# also admits the tables' owner, which only the SECURITY DEFINER queue functions run as. Only these tables may
# use that form, and only naming themselves; every other table must carry the exact fence. (app.job_logs was
# the 0002 name; it stays listed so that a database can still replay 0002 and 0003 on its way to 0004.)
OWNER_ADMITTED_TABLES = frozenset(
    {
        "app.jobs",
        "app.job_logs",
        "app.dead_letters",
        "app.scheduled_jobs",
        "app.finished_jobs",
        "app.job_failures",
        # oltp: the reputation writer marks quarantined assignments (schemas/oltp/0009).
        "app.domain_ip_assignments",
    }
)
RETENTION_FUNCTION_NAME = "in_retention_run"
# Tables whose fence also admits their owner inside retention.purge_batch() (schemas/shared/retention.sql):
# ``<fence> OR (SELECT app_private.in_retention_run('<that table>'::regclass))``, naming themselves. Row
# retention deletes across tenants; the function is true only for the owner while that function runs.
RETENTION_ADMITTED_TABLES = frozenset(
    {
        "app.content_objects",
        "app.attachments",
        "app.campaign_analytics",
        "app.mailbox_analytics",
        "app.lead_analytics",
        "app.warmup_analytics",
        "app.sequence_step_analytics",
    }
)
# Not managed by migrations: the catalogs and toast. ``pg_temp_N`` schemas are excluded by prefix. Schema
# ``pgbouncer`` (the pooler's auth lookup) belongs to the PoolerDatabase resource, whose refresh checks it
# (modules/postgres/pooler.py lookup_problems), as extension objects belong to the Extension resource.
UNMANAGED_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", "pgbouncer")
RELATION_KINDS = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "S": "sequence"}
RELATION_KINDS.update({"f": "foreign table"})


# ------------------------------------------------------------------------------------- fence parser


def _qualified(names: Iterable[ast.Node] | None) -> tuple[str, ...]:
    return tuple(getattr(n, "sval", "?") for n in names or ())


def _strip_uuid_casts(node: Any) -> Any:
    """``x::uuid`` is harmless (tenant_id and the function are uuid already); any other cast is not."""
    while isinstance(node, ast.TypeCast):
        type_name = node.typeName
        names = _qualified(type_name.names)
        if names not in (("uuid",), ("pg_catalog", "uuid")) or type_name.typmods or type_name.arrayBounds:
            return node
        node = node.arg
    return node


def _scalar_call(node: Any) -> Any:
    """The function call inside ``(SELECT f() [AS alias])``, or ``node`` itself when it is no such subquery."""
    if not isinstance(node, ast.SubLink):
        return node
    select = node.subselect
    if node.subLinkType != SubLinkType.EXPR_SUBLINK or node.testexpr is not None or node.operName:
        return None
    if not isinstance(select, ast.SelectStmt) or len(select.targetList or ()) != 1:
        return None
    extra = [
        slot
        for slot in ast.SelectStmt.__slots__
        if slot not in ("targetList", "groupDistinct", "limitOption", "op", "all")
        and getattr(select, slot, None)
    ]
    if extra or select.op != 0 or select.all or select.groupDistinct:
        return None
    target = select.targetList[0]
    if target.indirection:
        return None
    return _strip_uuid_casts(target.val)


def _plain_call(node: Any, name: str) -> ast.FuncCall | None:
    """``app_private.<name>(…)``: schema-qualified, no aggregate, window, FILTER, VARIADIC or named args."""
    if not isinstance(node, ast.FuncCall) or _qualified(node.funcname) != (TENANT_SCHEMA, name):
        return None
    if (
        node.agg_order
        or node.agg_filter
        or node.over
        or node.agg_within_group
        or node.agg_star
        or node.agg_distinct
        or node.func_variadic
    ):
        return None
    return node


def _is_tenant_call(node: Any) -> bool:
    call = _plain_call(_strip_uuid_casts(_scalar_call(_strip_uuid_casts(node))), TENANT_FUNCTION_NAME)
    return call is not None and not call.args


def _is_tenant_column(node: Any) -> bool:
    node = _strip_uuid_casts(node)
    return isinstance(node, ast.ColumnRef) and _qualified(node.fields) == (TENANT_COLUMN,)


def _equality_problem(node: Any) -> str | None:
    if isinstance(node, ast.BoolExpr):
        if node.boolop == BoolExprType.OR_EXPR:
            return "OR is not allowed (it widens the fence)"
        if node.boolop == BoolExprType.AND_EXPR:
            return "AND is not allowed (the fence is exactly one equality)"
        return "NOT is not allowed"
    if not isinstance(node, ast.A_Expr) or node.kind != 0:  # AEXPR_OP
        return "not a plain equality"
    if _qualified(node.name) not in (("=",), ("pg_catalog", "=")):
        return f"operator {'.'.join(_qualified(node.name))} is not pg_catalog.="
    pairs = ((node.lexpr, node.rexpr), (node.rexpr, node.lexpr))
    if any(_is_tenant_column(a) and _is_tenant_call(b) for a, b in pairs):
        return None
    if not any(_is_tenant_column(side) for side in (node.lexpr, node.rexpr)):
        return f"neither side is the {TENANT_COLUMN} column"
    return f"the other side is not {TENANT_SCHEMA}.{TENANT_FUNCTION_NAME}()"


def _is_owner_clause(node: Any, table: str, function: str = OWNER_FUNCTION_NAME) -> bool:
    call = _plain_call(_scalar_call(node), function)
    if call is None or len(call.args or ()) != 1:
        return False
    arg = call.args[0]
    return (
        isinstance(arg, ast.TypeCast)
        and _qualified(arg.typeName.names) in (("regclass",), ("pg_catalog", "regclass"))
        and isinstance(arg.arg, ast.A_Const)
        and getattr(arg.arg.val, "sval", None) == table
    )


def parse_expression(expression: str) -> Any:
    """The AST of one scalar expression; ``ValueError`` if the text is anything more than that."""
    try:
        statements = parse_sql(f"SELECT {expression}")
    except ParseError as exc:
        raise ValueError(f"does not parse: {exc}") from None
    if len(statements) != 1 or not isinstance(statements[0].stmt, ast.SelectStmt):
        raise ValueError("is not a single expression")
    select = statements[0].stmt
    if _scalar_call(ast.SubLink(subLinkType=SubLinkType.EXPR_SUBLINK, subselect=select)) is None:
        raise ValueError("is not a single expression")
    return select.targetList[0].val


def fence_problem(expression: str | None, table: str | None = None) -> str | None:
    """Why ``expression`` is not the tenant fence, or None when it is.

    Accepted: ``tenant_id = app_private.current_tenant_id()`` with either operand order, the call bare or as
    a scalar subquery ``(SELECT app_private.current_tenant_id() [AS x])``, any side cast to ``uuid``, any
    parentheses. Refused: everything else, including any OR, any AND (even with a tautology: the fence is
    exactly one equality, so nothing needs judging), NOT, another operator or column, a qualified or cast
    (non-uuid) column, a constant, another or unqualified function, arguments, aggregates or a subquery with
    FROM/WHERE/LIMIT. ``expression`` must be ``pg_get_expr`` output read under ``search_path = pg_catalog``.

    The exceptions: for a table of :data:`OWNER_ADMITTED_TABLES`, ``<fence> OR (SELECT
    app_private.is_owner_of('<that table>'::regclass))`` (either order), the queue's owner path; for a table
    of :data:`RETENTION_ADMITTED_TABLES`, the same with ``app_private.in_retention_run``, the retention run.
    """
    if not expression:
        return "missing"
    try:
        node = parse_expression(expression)
    except ValueError as exc:
        return str(exc)
    functions = [OWNER_FUNCTION_NAME] if table in OWNER_ADMITTED_TABLES else []
    functions += [RETENTION_FUNCTION_NAME] if table in RETENTION_ADMITTED_TABLES else []
    if (
        functions
        and isinstance(node, ast.BoolExpr)
        and node.boolop == BoolExprType.OR_EXPR
        and len(node.args) == 2
    ):
        first, second = node.args
        for fence, owner in ((first, second), (second, first)):
            if _equality_problem(fence) is None and any(_is_owner_clause(owner, table, f) for f in functions):
                return None
    return _equality_problem(node)


def is_fence(expression: str | None, table: str | None = None) -> bool:
    return fence_problem(expression, table) is None


# ------------------------------------------------------------------------------------- catalog reads


@contextmanager
def pinned_search_path(conn: psycopg.Connection) -> Iterator[None]:
    """Run the block with ``search_path = pg_catalog`` (a transaction or savepoint; restored on success)."""
    with conn.transaction():
        old = conn.execute("SELECT current_setting('search_path')").fetchone()[0]
        conn.execute("SELECT set_config('search_path', 'pg_catalog', true)")
        yield
        conn.execute("SELECT set_config('search_path', %s, true)", [old])


def managed_role_grantees(owner: str) -> set[str]:
    """The tier's login roles (``<prefix>_<tier>_app``/``_readonly``, and the duties of that tier such as the
    queue's ``_worker`` and the oltp tier's ``_reputation`` and ``_warmup``, next to ``…_migrator``).

    Their grants are applied after the migrations and compared by the ``Role`` resources on refresh, so they
    are left out of the migrations' fingerprint (they would otherwise all look added).
    """
    if not owner.endswith("_migrator"):
        return set()
    base = owner[: -len("_migrator")]
    roles = {f"{base}_app", f"{base}_readonly"}
    tier = base.rsplit("_", 1)[-1]
    return roles | {f"{base}_{duty}" for duty in duties_for(tier)}


# Managed schemas: all but the catalogs, toast and temporary schemas. Objects of extensions are left out.
_MANAGED = """n.nspname <> ALL (%(unmanaged)s) AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
              AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%%'"""
# Grants as sorted "grantee:PRIVILEGE[*]" (``*``: WITH GRANT OPTION); a NULL acl is the built-in default
# (for a function that includes EXECUTE for PUBLIC), so it is made explicit with acldefault().
_SCHEMAS = """
SELECT n.nspname, pg_get_userbyid(n.nspowner),
       ARRAY(SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END
                    || ':' || a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END
               FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
              WHERE a.grantee = 0 OR pg_get_userbyid(a.grantee) <> ALL (%(ignored)s) ORDER BY 1)
  FROM pg_namespace n
 WHERE MANAGED
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid AND d.deptype = 'e')
"""
_RELATIONS = """
SELECT c.relkind::text, c.oid::regclass::text, pg_get_userbyid(c.relowner),
       ARRAY(SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END
                    || ':' || a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END
               FROM aclexplode(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's'
                                                             ELSE 'r' END::"char", c.relowner))) a
              WHERE a.grantee = 0 OR pg_get_userbyid(a.grantee) <> ALL (%(ignored)s) ORDER BY 1)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND NOT c.relispartition AND MANAGED
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
"""
_FUNCTIONS = """
SELECT p.oid::regprocedure::text,
       CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END,
       p.prosecdef, pg_get_userbyid(p.proowner), coalesce(p.proconfig, '{}'),
       ARRAY(SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END
                    || ':' || a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END
               FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
              WHERE a.grantee = 0 OR pg_get_userbyid(a.grantee) <> ALL (%(ignored)s) ORDER BY 1),
       has_function_privilege('public', p.oid, 'EXECUTE')
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE MANAGED
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
"""
_TRIGGERS = """
SELECT t.tgrelid::regclass::text, t.tgname, t.tgfoid::regprocedure::text, t.tgenabled::text
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT t.tgisinternal AND NOT c.relispartition AND MANAGED
"""
_PARTITION_GRANTS = """
SELECT c.oid::regclass::text,
       ARRAY(SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END
                    || ':' || a.privilege_type
               FROM aclexplode(c.relacl) a WHERE a.grantee <> c.relowner ORDER BY 1)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relispartition AND MANAGED
"""


def _read(conn: psycopg.Connection, query: str, ignored: Iterable[str] = ()) -> list[tuple[Any, ...]]:
    params = {"unmanaged": list(UNMANAGED_SCHEMAS), "ignored": sorted(ignored)}
    return conn.execute(query.replace("MANAGED", _MANAGED), params).fetchall()


def security_snapshot(conn: psycopg.Connection, ignored_grantees: set[str]) -> dict[str, dict[str, Any]]:
    """Object label → fingerprint, for every schema, relation, function and trigger of the managed schemas.

    Objects of extensions are left out (the Extension resource owns them), and so are partitions: they come
    and go with maintenance, so they are checked by a rule instead (:func:`partition_grant_problems`).
    """
    snapshot: dict[str, dict[str, Any]] = {}
    with pinned_search_path(conn):
        for name, owner, grants in _read(conn, _SCHEMAS, ignored_grantees):
            snapshot[f"schema {name}"] = {"owner": owner, "grants": list(grants)}
        for kind, name, owner, grants in _read(conn, _RELATIONS, ignored_grantees):
            snapshot[f"{RELATION_KINDS[kind]} {name}"] = {"owner": owner, "grants": list(grants)}
        for name, definition, definer, owner, config, grants, _public in _read(
            conn, _FUNCTIONS, ignored_grantees
        ):
            snapshot[f"function {name}"] = {
                "sha256": hashlib.sha256((definition or "").encode("utf-8")).hexdigest(),
                "security_definer": definer,
                "owner": owner,
                "config": sorted(config),
                "grants": list(grants),
            }
        for table, name, function, enabled in _read(conn, _TRIGGERS):
            snapshot[f"trigger {name} on {table}"] = {"function": function, "enabled": enabled}
    return snapshot


def partition_grant_problems(conn: psycopg.Connection) -> list[str]:
    """Partitions are reached through their parent only: nobody but their owner holds a privilege on one."""
    with pinned_search_path(conn):
        rows = _read(conn, _PARTITION_GRANTS)
    return [
        f"table {name}: a partition has grants besides its owner's ({', '.join(grants)})"
        for name, grants in sorted(rows)
        if grants
    ]


def _search_path(config: Iterable[str]) -> list[str] | None:
    for item in config:
        if item.startswith("search_path="):
            value = item.split("=", 1)[1]
            return [part.strip().strip('"') for part in value.split(",") if part.strip()]
    return None


def definer_problems(conn: psycopg.Connection) -> list[str]:
    """Every SECURITY DEFINER function pins search_path with pg_temp last, and PUBLIC cannot execute it.

    Without ``pg_temp`` last, the caller's temporary schema is searched first for tables and types, so a
    caller can shadow what the function (running as its owner) reads.
    """
    with pinned_search_path(conn):
        rows = [
            (name, config, public)
            for name, _definition, definer, _owner, config, _grants, public in _read(conn, _FUNCTIONS)
            if definer
        ]
    problems: list[str] = []
    for name, config, public in sorted(rows):
        path = _search_path(config)
        if path is None:
            problems.append(f"SECURITY DEFINER function {name} does not pin search_path")
        elif not path or path[-1] != "pg_temp":
            problems.append(
                f"SECURITY DEFINER function {name} pins search_path to '{', '.join(path)}' without "
                "pg_temp last (a caller's temporary tables would shadow its own)"
            )
        if public:
            problems.append(f"SECURITY DEFINER function {name} is executable by PUBLIC")
    return problems


# ------------------------------------------------------------------------------------------ compare


def _words(values: Iterable[str]) -> str:
    return ", ".join(values) or "none"


def object_problems(label: str, want: dict[str, Any], have: dict[str, Any]) -> list[str]:
    """What changed in one object, in words (``label`` is e.g. ``function app.f(integer)``)."""
    problems: list[str] = []
    if "sha256" in want and want["sha256"] != have.get("sha256"):
        problems.append(
            f"{label}: its definition changed (sha256 {want['sha256'][:12]}… is now "
            f"{str(have.get('sha256'))[:12]}…)"
        )
    if "security_definer" in want and want["security_definer"] != have.get("security_definer"):
        state = "now SECURITY DEFINER" if have.get("security_definer") else "no longer SECURITY DEFINER"
        problems.append(f"{label}: is {state}")
    if want.get("owner") != have.get("owner"):
        problems.append(f"{label}: owner changed from {want.get('owner')} to {have.get('owner')}")
    if "config" in want:
        old_path, new_path = _search_path(want["config"]), _search_path(have.get("config") or [])
        if old_path != new_path:
            old = f"'{', '.join(old_path)}'" if old_path is not None else "not pinned"
            new = f"'{', '.join(new_path)}'" if new_path is not None else "not pinned"
            problems.append(f"{label}: search_path pin changed from {old} to {new}")
        others = [
            sorted(c for c in cfg if not c.startswith("search_path="))
            for cfg in (want["config"], have.get("config") or [])
        ]
        if others[0] != others[1]:
            problems.append(f"{label}: settings changed from {_words(others[0])} to {_words(others[1])}")
    if "grants" in want:
        added = sorted(set(have.get("grants") or []) - set(want["grants"]))
        removed = sorted(set(want["grants"]) - set(have.get("grants") or []))
        if added:
            problems.append(f"{label}: grants not from the migrations: {_words(added)}")
        if removed:
            problems.append(f"{label}: grants missing: {_words(removed)}")
    if "function" in want and want["function"] != have.get("function"):
        problems.append(f"{label}: runs {have.get('function')} instead of {want['function']}")
    if "enabled" in want and want["enabled"] != have.get("enabled"):
        problems.append(f"{label}: enabled changed from '{want['enabled']}' to '{have.get('enabled')}'")
    return problems


def security_problems(expected: dict[str, dict[str, Any]], live: dict[str, dict[str, Any]]) -> list[str]:
    """The live fingerprint against the recorded one: objects gone, added, and what changed in each."""
    problems: list[str] = []
    for label, want in sorted(expected.items()):
        have = live.get(label)
        if have is None:
            problems.append(f"{label}: is gone (the migrations made it)")
        else:
            problems.extend(object_problems(label, want, have))
    for label in sorted(set(live) - set(expected)):
        problems.append(f"{label}: is not from the migrations")
    return problems
