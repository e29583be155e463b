"""PostgreSQL tiers: migration times, tenant-scoped OLTP latency with and without RLS, queue throughput.

Runs against the devenv PostgreSQL (port 5433) in databases of its own (``pm_bench_*``), dropped at the end.

* Migrations: apply time of each tier on an empty database, the no-op check (an apply with nothing pending:
  lock, ledger, lint, baseline) and the refresh inspection.
* OLTP: 10,000 tenants, 5,000,000 leads (500 per tenant) and 1,000,000 campaigns (100 per tenant), seeded
  with ``INSERT … SELECT generate_series`` with the indexes dropped and rebuilt after. Typical tenant-scoped
  queries run as the app role (RLS on, tenant set with ``set_config``) and, interleaved, the same SQL as the
  superuser (RLS bypassed). The statements carry the explicit ``tenant_id`` filter the app is meant to send;
  two extra rows run with the policy as the only filter.
* The queue is measured by bench/bench_queue.py (the hybrid queue against the SKIP LOCKED floor).

Scale with ``PM_BENCH_TENANTS``, ``PM_BENCH_LEADS_PER_TENANT``, ``PM_BENCH_CAMPAIGNS_PER_TENANT``.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import statistics
import time
from pathlib import Path

import psycopg

from modules.postgres import admin
from modules.postgres import migrations as mig
from modules.postgres.client import ServerTarget, connect, server_target
from modules.postgres.component import EXTENSIONS
from modules.postgres.duties import grants_for, settings_for
from modules.providers import ProviderSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
TIERS = ("oltp", "content", "analytics", "queue")
TENANTS = int(os.environ.get("PM_BENCH_TENANTS", "10000"))
LEADS_PER_TENANT = int(os.environ.get("PM_BENCH_LEADS_PER_TENANT", "500"))
CAMPAIGNS_PER_TENANT = int(os.environ.get("PM_BENCH_CAMPAIGNS_PER_TENANT", "100"))
SAMPLES = int(os.environ.get("PM_BENCH_SAMPLES", "3000"))


def _devenv_env() -> None:
    """Start the devenv PostgreSQL if needed and export its variables (as `make bench` would)."""
    from devenv.postgres import PostgresService

    service = PostgresService()
    service.start()
    os.environ.update(service.env())


class Tier:
    """A throw-away tier database: owner, app role, migrations and grants, as the component makes them."""

    def __init__(self, target: ServerTarget, tier: str, prefix: str):
        self.target, self.tier, self.prefix = target, tier, prefix
        self.database = f"{prefix}_{tier}"
        self.owner, self.app = f"{self.database}_migrator", f"{self.database}_app"
        self.app_password = secrets.token_urlsafe(18)

    def create(self) -> None:
        with connect(self.target) as conn:
            admin.role_create(conn, {"name": self.owner, "login": False})
            admin.database_create(conn, self.database, self.owner)
        with self.connect() as conn:
            for extension in EXTENSIONS[self.tier]:
                admin.extension_create(conn, extension, "public")

    def migrate(self) -> mig.ApplyResult:
        with self.connect() as conn:
            return mig.apply(
                conn, mig.load_dir(REPO_ROOT / "schemas" / self.tier), owner=self.owner, actor="bench"
            )

    def grant_app(self) -> None:
        with connect(self.target) as conn:
            admin.role_create(
                conn,
                {
                    "name": self.app,
                    "login": True,
                    "password": self.app_password,
                    "settings": settings_for("app"),
                },
            )
            admin.database_privileges_set(conn, self.database, self.app, ["CONNECT"])
        with self.connect() as conn, conn.transaction():
            admin.grants_apply(conn, self.app, self.owner, grants_for(self.tier, "app"))

    def connect(self, as_app: bool = False, **kwargs) -> psycopg.Connection:
        target = self.target.with_login(self.app, self.app_password) if as_app else self.target
        return connect(target, self.database, application_name="penguinmails-bench", **kwargs)

    def drop(self) -> None:
        with connect(self.target) as conn:
            admin.database_drop(conn, self.database)
        for role in (self.app, self.owner):
            admin.role_drop(self.target, role, None)


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {
        "p50_ms": at(0.50),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "mean_ms": round(statistics.mean(ordered), 3),
    }


# ------------------------------------------------------------------------------------------ migrations


def bench_migrations(target: ServerTarget, prefix: str) -> dict[str, object]:
    result: dict[str, object] = {}
    for tier in TIERS:
        db = Tier(target, tier, prefix)
        db.create()
        try:
            started = time.perf_counter()
            applied = db.migrate()
            apply_s = time.perf_counter() - started
            noop = []
            for _ in range(5):
                started = time.perf_counter()
                again = db.migrate()
                noop.append(time.perf_counter() - started)
                assert again.applied == [] and again.repaired == []
            files = mig.load_dir(REPO_ROOT / "schemas" / tier)
            with db.connect() as conn:
                started = time.perf_counter()
                found = mig.inspect(conn, files)
                inspect_s = time.perf_counter() - started
            assert found.drift == []
            result[tier] = {
                "files": len(applied.applied),
                "apply_s": round(apply_s, 3),
                "noop_check_s": round(statistics.median(noop), 3),
                "refresh_inspect_s": round(inspect_s, 3),
            }
        finally:
            db.drop()
    return result


# ----------------------------------------------------------------------------------------------- OLTP

LEAD_STATUSES = ["new", "contacted", "replied", "bounced", "unsubscribed", "converted"]
CAMPAIGN_STATUSES = ["draft", "scheduled", "sending", "completed", "paused"]


def seed_oltp(db: Tier) -> dict[str, float]:
    """Bulk load as the superuser (RLS bypassed), indexes dropped during the load and rebuilt after."""
    timings: dict[str, float] = {}
    with db.connect() as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET max_parallel_maintenance_workers = 2")
        started = time.perf_counter()
        conn.execute(
            "INSERT INTO app.tenants (tenant_id, name) "
            "SELECT md5('tenant' || n)::uuid, 'Tenant ' || n FROM generate_series(1, %s) n",
            [TENANTS],
        )
        conn.execute(
            "INSERT INTO app.companies (tenant_id, id, name, workspace_name) "
            "SELECT tenant_id, md5('company' || tenant_id)::uuid, 'Company', 'main' FROM app.tenants"
        )
        timings["tenants_s"] = time.perf_counter() - started
        conn.execute(
            "ALTER TABLE app.leads DROP CONSTRAINT leads_pkey, DROP CONSTRAINT leads_tenant_id_email_key, "
            "DROP CONSTRAINT leads_tenant_id_fkey"
        )
        conn.execute("DROP INDEX app.idx_leads_tenant_status_updated")
        started = time.perf_counter()
        conn.execute(
            """INSERT INTO app.leads (tenant_id, id, email, name, status, created, updated)
                SELECT t.tenant_id, gen_random_uuid(), 'lead' || g || '@example.org', 'Lead ' || g,
                       (%s::text[])[1 + (hashtext(t.tenant_id::text || g) & 65535) %% 6],
                       now() - make_interval(mins => g * 7), now() - make_interval(mins => g * 3)
                  FROM app.tenants t, generate_series(1, %s) g""",
            [LEAD_STATUSES, LEADS_PER_TENANT],
        )
        timings["leads_insert_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("ALTER TABLE app.leads ADD PRIMARY KEY (tenant_id, id), ADD UNIQUE (tenant_id, email)")
        conn.execute(
            "CREATE INDEX idx_leads_tenant_status_updated ON app.leads (tenant_id, status, updated DESC)"
        )
        conn.execute(
            "ALTER TABLE app.leads ADD FOREIGN KEY (tenant_id) REFERENCES app.tenants (tenant_id) "
            "ON DELETE CASCADE"
        )
        timings["leads_index_s"] = time.perf_counter() - started
        conn.execute(
            "ALTER TABLE app.campaigns DROP CONSTRAINT campaigns_pkey CASCADE, "
            "DROP CONSTRAINT campaigns_tenant_id_fkey, DROP CONSTRAINT campaigns_tenant_id_company_id_fkey"
        )
        conn.execute("DROP INDEX app.idx_campaigns_tenant_status_created, app.idx_campaigns_tenant_created")
        started = time.perf_counter()
        conn.execute(
            """INSERT INTO app.campaigns (tenant_id, id, company_id, name, status, created, updated)
                SELECT t.tenant_id, gen_random_uuid(), md5('company' || t.tenant_id)::uuid, 'Campaign ' || g,
                       (%s::text[])[1 + (hashtext(t.tenant_id::text || g) & 65535) %% 5],
                       now() - make_interval(hours => g * 5), now() - make_interval(hours => g)
                  FROM app.tenants t, generate_series(1, %s) g""",
            [CAMPAIGN_STATUSES, CAMPAIGNS_PER_TENANT],
        )
        timings["campaigns_insert_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("ALTER TABLE app.campaigns ADD PRIMARY KEY (tenant_id, id)")
        conn.execute(
            "ALTER TABLE app.campaign_sequence_steps ADD FOREIGN KEY (tenant_id, campaign_id) "
            "REFERENCES app.campaigns (tenant_id, id) ON DELETE CASCADE"
        )
        conn.execute(
            "CREATE INDEX idx_campaigns_tenant_status_created "
            "ON app.campaigns (tenant_id, status, created DESC)"
        )
        conn.execute("CREATE INDEX idx_campaigns_tenant_created ON app.campaigns (tenant_id, created DESC)")
        conn.execute(
            "ALTER TABLE app.campaigns ADD FOREIGN KEY (tenant_id) REFERENCES app.tenants (tenant_id) "
            "ON DELETE CASCADE, ADD FOREIGN KEY (tenant_id, company_id) "
            "REFERENCES app.companies (tenant_id, id) "
            "ON DELETE SET NULL (company_id)"
        )
        timings["campaigns_index_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("VACUUM (ANALYZE) app.tenants, app.companies, app.leads, app.campaigns")
        timings["vacuum_analyze_s"] = time.perf_counter() - started
        # The rebuilt schema must still be exactly what the migrations made (keys, RLS, policies).
        assert mig.tenant_table_problems(conn) == [] and mig.baseline_problems(conn) == []
    return {key: round(value, 1) for key, value in timings.items()}


QUERIES = {
    "lead_by_email": (
        "SELECT id, name, status FROM app.leads WHERE tenant_id = %(t)s AND email = %(email)s",
        True,
    ),
    "leads_page_by_status": (
        "SELECT id, email, name, updated FROM app.leads WHERE tenant_id = %(t)s AND status = 'new' "
        "ORDER BY updated DESC LIMIT 50",
        True,
    ),
    "lead_status_counts": (
        "SELECT status, count(*) FROM app.leads WHERE tenant_id = %(t)s GROUP BY status",
        True,
    ),
    "campaigns_recent": (
        "SELECT id, name, status, created FROM app.campaigns WHERE tenant_id = %(t)s "
        "ORDER BY created DESC LIMIT 20",
        True,
    ),
    "campaign_status_counts": (
        "SELECT status, count(*) FROM app.campaigns WHERE tenant_id = %(t)s GROUP BY status",
        True,
    ),
    "lead_update_by_id": (
        "UPDATE app.leads SET status = 'contacted', updated = now() WHERE tenant_id = %(t)s AND id = %(id)s",
        False,
    ),
    # The policy as the only tenant filter (what an app that forgets its WHERE gets).
    "policy_only_lead_by_email": ("SELECT id, name, status FROM app.leads WHERE email = %(email)s", True),
    "policy_only_campaigns_recent": (
        "SELECT id, name, status, created FROM app.campaigns ORDER BY created DESC LIMIT 20",
        True,
    ),
}


def bench_queries(db: Tier) -> dict[str, object]:
    rng = random.Random(7)
    with db.connect() as conn:
        tenants = [row[0] for row in conn.execute("SELECT tenant_id FROM app.tenants").fetchall()]
        lead_ids = {
            row[0]: row[1]
            for row in conn.execute(
                "SELECT DISTINCT ON (tenant_id) tenant_id, id FROM app.leads ORDER BY tenant_id"
            ).fetchall()
        }
    with db.connect() as conn:
        # Random tenants over a 1.7 GB database: read it into the OS cache first, so the interleaved RLS and
        # no-RLS samples meet the same warm cache instead of the first query paying for cold pages.
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        conn.execute(
            "SELECT pg_prewarm(c.oid, 'read') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'app' AND c.relkind IN ('r', 'i')"
        )
    results: dict[str, object] = {}
    with db.connect(as_app=True) as app, db.connect() as superuser:
        superuser.execute("SET search_path = app, platform, public")
        for name, (query, read_only) in QUERIES.items():
            policy_only = name.startswith("policy_only")
            timing: dict[str, list[float]] = {"rls": [], "norls": [], "rls_txn": [], "norls_txn": []}
            for i in range(SAMPLES + 200):
                tenant = rng.choice(tenants)
                params = {
                    "t": tenant,
                    "email": f"lead{rng.randint(1, LEADS_PER_TENANT)}@example.org",
                    "id": lead_ids[tenant],
                }
                order = (
                    (("rls", app), ("norls", superuser)) if i % 2 else (("norls", superuser), ("rls", app))
                )
                for mode, conn in order:
                    if policy_only and mode == "norls":
                        continue  # without RLS this query would read every tenant: nothing to compare
                    txn_started = time.perf_counter()
                    with conn.transaction():
                        if mode == "rls":
                            conn.execute("SELECT set_config('app.tenant_id', %s, true)", [str(tenant)])
                        started = time.perf_counter()
                        cursor = conn.execute(query, params)
                        if read_only:
                            cursor.fetchall()
                        elapsed = time.perf_counter() - started
                    txn_elapsed = time.perf_counter() - txn_started
                    if i >= 200:  # the first 200 warm the caches and the prepared statements
                        timing[mode].append(elapsed * 1000)
                        timing[f"{mode}_txn"].append(txn_elapsed * 1000)
            entry: dict[str, object] = {
                "rls": percentiles(timing["rls"]),
                "rls_txn": percentiles(timing["rls_txn"]),
            }
            if timing["norls"]:
                entry["norls"] = percentiles(timing["norls"])
                entry["norls_txn"] = percentiles(timing["norls_txn"])
                entry["p95_ratio"] = round(entry["rls"]["p95_ms"] / entry["norls"]["p95_ms"], 2)
                entry["p50_ratio"] = round(entry["rls"]["p50_ms"] / entry["norls"]["p50_ms"], 2)
            if timing["norls"]:
                entry["same_plan_as_without_rls"] = _plan(app, query, params, tenant) == _plan(
                    superuser, query, params, None
                )
            results[name] = entry
        plan = "\n".join(
            row[0]
            for row in app.execute(
                "EXPLAIN (COSTS OFF) SELECT id FROM app.leads WHERE email = 'lead1@example.org'"
            ).fetchall()
        )
        results["policy_only_plan_uses_index"] = "Index" in plan and "Seq Scan" not in plan
    return results


def _plan(conn: psycopg.Connection, query: str, params: dict, tenant: object) -> list[str]:
    """The plan's node lines, without the InitPlan that evaluates the tenant function once."""
    with conn.transaction(force_rollback=True):
        if tenant is not None:
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", [str(tenant)])
        lines = [row[0] for row in conn.execute("EXPLAIN (COSTS OFF) " + query, params).fetchall()]
    nodes = [line.strip().removeprefix("->  ").split(" on ")[0].split("  ")[0] for line in lines]
    detail = (
        "InitPlan",
        "Result",
        "One-Time Filter",
        "Index Cond",
        "Filter",
        "Recheck Cond",
        "Group Key",
        "Sort Key",
    )
    return [n for n in nodes if n and not n.startswith(detail)]


# ------------------------------------------------------------------------------------------------- run


def run() -> dict:
    if "PENGUINMAILS_POSTGRES_ADMIN_PASSWORD" not in os.environ:
        _devenv_env()
    target = server_target(ProviderSettings(), "oltp")
    prefix = f"pm_bench_{secrets.token_hex(2)}"
    result: dict[str, object] = {
        "scale": {
            "tenants": TENANTS,
            "leads": TENANTS * LEADS_PER_TENANT,
            "campaigns": TENANTS * CAMPAIGNS_PER_TENANT,
            "samples_per_query": SAMPLES,
        }
    }
    result["migrations"] = bench_migrations(target, prefix)

    oltp = Tier(target, "oltp", prefix)
    oltp.create()
    try:
        oltp.migrate()
        oltp.grant_app()
        started = time.perf_counter()
        result["seed"] = seed_oltp(oltp)
        result["seed"]["total_s"] = round(time.perf_counter() - started, 1)
        with oltp.connect() as conn:
            result["seed"]["database_mb"] = round(
                conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20
            )
            started = time.perf_counter()
            mig.apply(conn, mig.load_dir(REPO_ROOT / "schemas" / "oltp"), owner=oltp.owner)
            result["migrations"]["oltp_noop_check_on_seeded_db_s"] = round(time.perf_counter() - started, 3)
        result["oltp_queries"] = bench_queries(oltp)
    finally:
        oltp.drop()

    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
