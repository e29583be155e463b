"""What each login role of a tier may do, by tier and duty: schema-wide grants, settings, connection limits.

Grants stay schema-wide (``{on, schema, privileges}``, applied by :func:`modules.postgres.admin.grants_apply`
to existing objects and, through default privileges, to the ones later migrations create), so what a role
can reach is decided by *which schema* an object lives in:

* ``app`` — tenant tables under forced RLS and the functions the application calls.
* ``platform`` — shared reference data every tenant may read (plans, feature flags, job queues).
* ``app_private`` — the tenant function the policies call.
* ``fleet`` (oltp) — the sending fleet: VPS costs, Hostwinds ids, IP reputation. No tenant-facing grant.
* ``audit`` (analytics) — the staff audit trail: the app appends (INSERT only; no SELECT, so it cannot read
  back, and no UPDATE/DELETE/TRUNCATE), readonly reports on it, both under the tenant fence.
* ``worker`` (queue, from ``schemas/queue/0004_*``) — SECURITY DEFINER functions of the queue workers, the
  only thing the ``worker`` role can touch.
* ``reputation`` (oltp, from ``schemas/oltp/0009_*``) — SECURITY DEFINER functions of the DNSBL checker
  (results on fleet IPs, quarantine marks on assignments), the only thing the ``reputation`` role can touch.
* ``warmup`` (oltp, from ``schemas/oltp/0010_*``) — SECURITY DEFINER functions that read and change the
  sending IPs' warm-up plans, the only thing the ``warmup`` role can touch.
* ``retention`` (content, queue, analytics, from ``schemas/shared/retention.sql``) — the row retention
  procedure (owner only) and ``retention.runs``, which the ``readonly`` role reads for the exporter.
* ``internal``, ``pm_meta``, ``partitions`` — owner only.

Duties: ``app`` and ``readonly`` in every tier (tenant-facing: every session sets ``app.tenant_id``);
``worker`` in the queue tier only, ``reputation`` and ``warmup`` in the oltp tier only (cross-tenant,
through their functions alone: the DNSBL checker; the warm-up job and ``penguinmails warmup``).
"""

from __future__ import annotations

from typing import Any

DUTIES = ("app", "readonly", "worker", "reputation", "warmup")
TENANT_FACING = ("app", "readonly")
SEARCH_PATH = "app, platform, public"
CONNECTION_LIMITS = {"migrator": 10, "app": 100, "readonly": 20, "worker": 64, "reputation": 4, "warmup": 8}

SETTINGS: dict[str, dict[str, str]] = {
    "app": {
        "search_path": SEARCH_PATH,
        "statement_timeout": "30s",
        "lock_timeout": "10s",
        "idle_in_transaction_session_timeout": "60s",
    },
    "readonly": {
        "search_path": SEARCH_PATH,
        "statement_timeout": "60s",
        "idle_in_transaction_session_timeout": "60s",
        "default_transaction_read_only": "on",
    },
    "worker": {
        "search_path": "worker, pg_catalog",
        "statement_timeout": "30s",
        "lock_timeout": "10s",
        "idle_in_transaction_session_timeout": "60s",
    },
    "reputation": {
        "search_path": "reputation, pg_catalog",
        "statement_timeout": "30s",
        "lock_timeout": "10s",
        "idle_in_transaction_session_timeout": "60s",
    },
    "warmup": {
        "search_path": "warmup, pg_catalog",
        "statement_timeout": "30s",
        "lock_timeout": "10s",
        "idle_in_transaction_session_timeout": "60s",
    },
}


def _grant(on: str, schema: str, *privileges: str) -> dict[str, Any]:
    return {"on": on, "schema": schema, "privileges": sorted(privileges)}


def _usage(*schemas: str) -> list[dict[str, Any]]:
    return [_grant("schema", schema, "USAGE") for schema in schemas]


# The tenant-facing base of every tier: tenant tables in app, reference data in platform, the tenant function.
_APP = [
    *_usage("app", "platform", "app_private"),
    _grant("tables", "app", "DELETE", "INSERT", "SELECT", "UPDATE"),
    _grant("sequences", "app", "SELECT", "USAGE"),
    _grant("functions", "app", "EXECUTE"),
    _grant("functions", "app_private", "EXECUTE"),
    _grant("tables", "platform", "SELECT"),
]
_READONLY = [
    *_usage("app", "platform", "app_private"),
    _grant("tables", "app", "SELECT"),
    _grant("functions", "app_private", "EXECUTE"),
    _grant("tables", "platform", "SELECT"),
]

# The record of row retention runs (schemas/shared/retention.sql), read by the exporter as readonly: no
# tenant data, and nothing else in schema retention is a table.
_RETENTION_READ = [*_usage("retention"), _grant("tables", "retention", "SELECT")]

GRANTS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("oltp", "app"): _APP,
    ("oltp", "readonly"): _READONLY,
    ("content", "app"): _APP,
    ("content", "readonly"): [*_READONLY, *_RETENTION_READ],
    ("analytics", "app"): [*_APP, *_usage("audit"), _grant("tables", "audit", "INSERT")],
    ("analytics", "readonly"): [
        *_READONLY,
        *_usage("audit"),
        _grant("tables", "audit", "SELECT"),
        *_RETENTION_READ,
    ],
    # The queue's tables change only through its functions (enqueue, replay: schemas/queue/0004_*).
    ("queue", "app"): [
        *_usage("app", "platform", "app_private"),
        _grant("tables", "app", "SELECT"),
        _grant("functions", "app", "EXECUTE"),
        _grant("functions", "app_private", "EXECUTE"),
        _grant("tables", "platform", "SELECT"),
    ],
    ("queue", "readonly"): [*_READONLY, *_RETENTION_READ],
    ("queue", "worker"): [*_usage("worker"), _grant("functions", "worker", "EXECUTE")],
    ("oltp", "reputation"): [*_usage("reputation"), _grant("functions", "reputation", "EXECUTE")],
    # The sending IPs' warm-up plans change only through these functions (schemas/oltp/0010_*).
    ("oltp", "warmup"): [*_usage("warmup"), _grant("functions", "warmup", "EXECUTE")],
}


def duties_for(tier: str) -> tuple[str, ...]:
    """The login duties a tier has besides its migrator, in declaration order."""
    return tuple(duty for duty in DUTIES if (tier, duty) in GRANTS)


def grants_for(tier: str, duty: str) -> list[dict[str, Any]]:
    """A fresh copy of the grants of ``duty`` in ``tier`` (KeyError for a duty the tier does not have)."""
    return [{**grant, "privileges": list(grant["privileges"])} for grant in GRANTS[(tier, duty)]]


def settings_for(duty: str) -> dict[str, str]:
    return dict(SETTINGS[duty])
