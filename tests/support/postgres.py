"""Provision throw-away tier databases on the devenv PostgreSQL, and seed tenants into them.

Provisioning uses the same plain functions as the Pulumi resources (roles, database, extensions,
migrations, grants), under a random prefix so parallel runs and the dev stack never collide. Seeds insert
rows for a tenant into every tenant table of a tier as the *app* role, through RLS (the queue's as its owner,
with the tenant set: its app role only reads); the isolation tests take
their table list from the catalog and fail when a table has no seed rows, so a new table cannot slip by.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from modules.postgres import admin
from modules.postgres import migrations as mig
from modules.postgres.client import ServerTarget, connect, server_target, tenant_transaction
from modules.postgres.component import EXTENSIONS
from modules.postgres.duties import CONNECTION_LIMITS, duties_for, grants_for, settings_for
from modules.providers import ProviderSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


def admin_target(tier: str = "oltp") -> ServerTarget:
    return server_target(ProviderSettings(), tier)


@dataclass
class TierDb:
    tier: str
    prefix: str
    target: ServerTarget
    passwords: dict[str, str] = field(default_factory=dict, repr=False)
    # Duties left out because a schema their grants name does not exist yet: duty → those schemas.
    missing: dict[str, list[str]] = field(default_factory=dict)
    # Set by tests.support.pooler.pool(): the login roles (not the admin, not the migrator) connect through
    # PgBouncer to the pooler's database ``pooled_alias``.
    pooled: ServerTarget | None = None
    pooled_alias: str | None = None

    @property
    def database(self) -> str:
        return f"{self.prefix}_{self.tier}"

    def role(self, kind: str) -> str:
        return f"{self.prefix}_{self.tier}_{kind}"

    def connect(self, kind: str = "admin", **kwargs) -> psycopg.Connection:
        """A connection as the admin, or as the tier's ``migrator``/``app``/``readonly``/``worker`` role."""
        if kind in self.missing:
            raise LookupError(
                f"{self.role(kind)} was not created: schema(s) {', '.join(self.missing[kind])} do not exist "
                f"after the {self.tier} migrations"
            )
        if self.pooled is not None and kind not in ("admin", "migrator"):
            conn = connect(
                self.pooled.with_login(self.role(kind), self.passwords[kind]),
                self.pooled_alias or self.database,
                application_name=f"itest-{kind}",
                **kwargs,
            )
            conn.prepare_threshold = None  # a transaction pooler does not keep prepared statements
            return conn
        target = (
            self.target if kind == "admin" else self.target.with_login(self.role(kind), self.passwords[kind])
        )
        return connect(target, self.database, application_name=f"itest-{kind}", **kwargs)


def provision(tier: str, prefix: str | None = None, directory: Path | None = None) -> TierDb:
    """Roles, database, extensions, migrations and grants of one tier, as the component declares them.

    A duty whose grants name a schema the migrations did not create (the queue's ``worker`` before
    schemas/queue/0004) is left out and listed in ``missing``; :func:`add_duty` creates it later."""
    db = TierDb(tier, prefix or f"pmt_{secrets.token_hex(3)}", admin_target(tier))
    db.passwords = {kind: secrets.token_urlsafe(18) for kind in ("migrator", *duties_for(tier))}
    with connect(db.target) as conn:
        admin.role_create(
            conn, {"name": db.role("migrator"), "login": True, "password": db.passwords["migrator"]}
        )
        admin.database_create(conn, db.database, db.role("migrator"))
    with db.connect() as conn:
        for extension in EXTENSIONS[tier]:
            admin.extension_create(conn, extension, "public")
        mig.apply(conn, mig.load_dir(directory or REPO_ROOT / "schemas" / tier), owner=db.role("migrator"))
    for duty in duties_for(tier):
        with db.connect() as conn:
            absent = missing_schemas(conn, grants_for(tier, duty))
        if absent:
            db.missing[duty] = absent
        else:
            add_duty(db, duty)
    return db


def missing_schemas(conn: psycopg.Connection, grants: list[dict]) -> list[str]:
    wanted = sorted({grant["schema"] for grant in grants})
    present = {
        row[0] for row in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY (%s)", [wanted])
    }
    return [schema for schema in wanted if schema not in present]


def add_duty(db: TierDb, duty: str, grants: list[dict] | None = None) -> None:
    """The login role of ``duty`` with its settings, CONNECT and grants (as the ``Role`` resource makes it;
    ``grants`` overrides the duty's, e.g. to stand for an older version of the stack)."""
    db.passwords.setdefault(duty, secrets.token_urlsafe(18))
    with connect(db.target) as conn:
        props = {
            "name": db.role(duty),
            "login": True,
            "password": db.passwords[duty],
            "connection_limit": CONNECTION_LIMITS[duty],
            "settings": settings_for(duty),
        }
        admin.role_create(conn, props)
        admin.database_privileges_set(conn, db.database, db.role(duty), ["CONNECT"])
    with db.connect() as conn, conn.transaction():
        admin.grants_apply(
            conn, db.role(duty), db.role("migrator"), grants_for(db.tier, duty) if grants is None else grants
        )
    db.missing.pop(duty, None)


def provision_queue_with_worker() -> TierDb:
    """A queue tier with its worker role. Until schemas/queue/0004 creates schema ``worker``, the scratch
    database gets a stand-in (the schema and one SECURITY DEFINER function) so the role's grants apply."""
    db = provision("queue")
    if "worker" in db.missing:
        if list((REPO_ROOT / "schemas" / "queue").glob("0004_*.sql")):
            teardown(db)
            raise AssertionError("schemas/queue/0004 exists but the queue migrations create no schema worker")
        with db.connect() as conn, conn.transaction():
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(db.role("migrator"))))
            conn.execute("CREATE SCHEMA worker")
            conn.execute(
                "CREATE FUNCTION worker.stand_in() RETURNS bigint LANGUAGE sql SECURITY DEFINER "
                "SET search_path = pg_catalog, pg_temp AS 'SELECT count(*) FROM app.jobs'"
            )
        add_duty(db, "worker")
    return db


@contextmanager
def private_cluster(prefix: str, port: int | None = None) -> Iterator:
    """A PostgreSQL cluster of the test's own, with the devenv's settings, that it may stop and restart; the
    ``PENGUINMAILS_POSTGRES_*`` variables point at it meanwhile (so ``provision`` uses it)."""
    from devenv.base import devenv_root
    from devenv.postgres import PostgresService

    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=devenv_root()))
    service = PostgresService(root=root, port=port)
    saved = {key: os.environ.get(key) for key in service.env()}
    try:
        service.start()
        os.environ.update(service.env())
        yield service
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        service.stop()
        service.discard()
        shutil.rmtree(root, ignore_errors=True)


def teardown(db: TierDb) -> None:
    with connect(db.target) as conn:
        admin.database_drop(conn, db.database)
    for kind in (*duties_for(db.tier), "migrator"):
        admin.role_drop(db.target, db.role(kind), None)


# ------------------------------------------------------------------------------------------------ seeds


def seed_platform(db: TierDb) -> dict[str, object]:
    """Shared reference rows (no tenant) the tenant rows point at; inserted as the owner."""
    with db.connect("migrator") as conn:
        if db.tier == "oltp":
            plan = conn.execute(
                "INSERT INTO platform.plans (slug, name, max_leads) VALUES ('starter', 'Starter', "
                "1000) RETURNING id"
            ).fetchone()[0]
            vps = conn.execute(
                "INSERT INTO fleet.vps_instances (hostwinds_instance_id, ip_address, status) "
                "VALUES ('hw-1', '192.0.2.10', 'active') RETURNING id"
            ).fetchone()[0]
            ip = conn.execute(
                "INSERT INTO fleet.smtp_ip_addresses (vps_instance_id, ip_address) "
                "VALUES (%s, '192.0.2.10') RETURNING id",
                [vps],
            ).fetchone()[0]
            return {"plan": plan, "smtp_ip": ip}
        if db.tier == "queue":
            conn.execute(
                "INSERT INTO platform.job_queues (name, default_priority, max_attempts, retry_base, "
                "retry_cap, "
                "lock_duration) VALUES ('itest', 100, 3, '200 milliseconds', '800 milliseconds', '30 "
                "seconds')"
            )
    return {}


def _seed_oltp(conn: psycopg.Connection, tenant: uuid.UUID, refs: dict[str, object]) -> None:
    user = uuid.uuid4()
    with tenant_transaction(conn, tenant, user):
        x = conn.execute
        x("INSERT INTO app.tenants (tenant_id, name) VALUES (%s, %s)", [tenant, f"Tenant {tenant}"])
        x("INSERT INTO app.users (id, email, name) VALUES (%s, %s, 'Owner')", [user, f"{user}@example.com"])
        x(
            "INSERT INTO app.tenant_users (tenant_id, user_id, roles) VALUES (%s, %s, '{owner}')",
            [tenant, user],
        )
        x('INSERT INTO app.tenant_config (tenant_id, settings) VALUES (%s, \'{"locale": "en"}\')', [tenant])
        x("INSERT INTO app.tenant_policies (tenant_id) VALUES (%s)", [tenant])
        x("INSERT INTO app.user_preferences (tenant_id, user_id) VALUES (%s, %s)", [tenant, user])
        # The same natural keys for every tenant: uniqueness is per tenant, so nothing collides.
        company = x(
            "INSERT INTO app.companies (tenant_id, name, workspace_name) VALUES (%s, 'Acme', 'acme') "
            "RETURNING id",
            [tenant],
        ).fetchone()[0]
        domain = x(
            "INSERT INTO app.domains (tenant_id, company_id, domain) VALUES (%s, %s, 'mail.example.com') "
            "RETURNING id",
            [tenant, company],
        ).fetchone()[0]
        account = x(
            "INSERT INTO app.email_accounts (tenant_id, domain_id, email) VALUES (%s, %s, "
            "'sales@mail.example.com')"
            " RETURNING id",
            [tenant, domain],
        ).fetchone()[0]
        x(
            "INSERT INTO app.domain_ip_assignments (tenant_id, domain_id, smtp_ip_address_id) VALUES "
            "(%s, %s, %s)",
            [tenant, domain, refs["smtp_ip"]],
        )
        x(
            "INSERT INTO app.leads (tenant_id, email, name) VALUES (%s, 'ada@example.org', 'Ada'), "
            "(%s, 'bob@example.org', 'Bob')",
            [tenant, tenant],
        )
        template = x(
            "INSERT INTO app.templates (tenant_id, name, subject) VALUES (%s, 'Intro', 'Hello') RETURNING id",
            [tenant],
        ).fetchone()[0]
        folder = x(
            "INSERT INTO app.folders (tenant_id, name) VALUES (%s, 'Outreach') RETURNING id", [tenant]
        ).fetchone()[0]
        tag = x("INSERT INTO app.tags (tenant_id, name) VALUES (%s, 'q4') RETURNING id", [tenant]).fetchone()[
            0
        ]
        x("INSERT INTO app.template_folders VALUES (%s, %s, %s)", [tenant, template, folder])
        x("INSERT INTO app.template_tags VALUES (%s, %s, %s)", [tenant, template, tag])
        x(
            "INSERT INTO app.email_templates (tenant_id, name, body_eta) VALUES (%s, 'welcome', 'Hi "
            "<%%= it.name %%>')",
            [tenant],
        )
        campaign = x(
            "INSERT INTO app.campaigns (tenant_id, company_id, name) VALUES (%s, %s, 'Launch') RETURNING id",
            [tenant, company],
        ).fetchone()[0]
        x(
            "INSERT INTO app.campaign_sequence_steps (tenant_id, campaign_id, step_order, step_type, "
            "email_account_id, template_id) VALUES (%s, %s, 1, 'email', %s, %s)",
            [tenant, campaign, account, template],
        )
        subscription = x(
            "INSERT INTO app.subscriptions (tenant_id, plan_id, stripe_subscription_id) VALUES (%s, "
            "%s, 'sub_1') "
            "RETURNING id",
            [tenant, refs["plan"]],
        ).fetchone()[0]
        x(
            "INSERT INTO app.subscription_addons (tenant_id, subscription_id, addon_type) VALUES "
            "(%s, %s, 'dedicated_ip')",
            [tenant, subscription],
        )
        x(
            "INSERT INTO app.payments (tenant_id, subscription_id, amount, status, stripe_payment_intent_id) "
            "VALUES (%s, %s, 9.99, 'succeeded', 'pi_1')",
            [tenant, subscription],
        )


def _seed_content(conn: psycopg.Connection, tenant: uuid.UUID, _refs: dict[str, object]) -> None:
    with tenant_transaction(conn, tenant):
        created = conn.execute(
            "INSERT INTO app.content_objects (tenant_id, storage_key, content_text, content_html, "
            "raw_size_bytes, "
            "expires_at, content_hash, compression_algorithm) VALUES (%s, 'msg/1', repeat('body ', 200), "
            "'<p>hi</p>', 1000, now() + interval '7 years', md5('x'), 'lz4') RETURNING created_at",
            [tenant],
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO app.attachments (tenant_id, storage_key, content_created_at, filename, "
            "size_bytes, content)"
            " VALUES (%s, 'msg/1', %s, 'a.txt', 3, 'abc')",
            [tenant, created],
        )


def _seed_analytics(conn: psycopg.Connection, tenant: uuid.UUID, _refs: dict[str, object]) -> None:
    with tenant_transaction(conn, tenant):
        x = conn.execute
        billing = x(
            "INSERT INTO app.billing_analytics (tenant_id, emails_sent, period_start, period_end) "
            "VALUES (%s, 100, date '2026-10-01', date '2026-10-31') RETURNING id",
            [tenant],
        ).fetchone()[0]
        ids = [uuid.uuid4() for _ in range(4)]
        x(
            "INSERT INTO app.campaign_analytics (tenant_id, campaign_id, period_start, sent, billing_id) "
            "VALUES (%s, %s, date '2026-10-01', 10, %s)",
            [tenant, ids[0], billing],
        )
        x(
            "INSERT INTO app.mailbox_analytics (tenant_id, mailbox_id, period_start, sent, billing_id) "
            "VALUES (%s, %s, date '2026-10-01', 10, %s)",
            [tenant, ids[1], billing],
        )
        x(
            "INSERT INTO app.lead_analytics (tenant_id, lead_id, campaign_id, period_start, sent, "
            "billing_id) "
            "VALUES (%s, %s, %s, date '2026-10-01', 1, %s)",
            [tenant, ids[2], ids[0], billing],
        )
        x(
            "INSERT INTO app.warmup_analytics (tenant_id, mailbox_id, period_start, sent, billing_id) "
            "VALUES (%s, %s, date '2026-10-01', 5, %s)",
            [tenant, ids[1], billing],
        )
        x(
            "INSERT INTO app.sequence_step_analytics (tenant_id, step_id, campaign_id, period_start, sent, "
            "billing_id) VALUES (%s, %s, %s, date '2026-10-01', 3, %s)",
            [tenant, ids[3], ids[0], billing],
        )
        x(
            "INSERT INTO audit.admin_audit_log (tenant_id, admin_user_id, action, resource_type, resource_id) "
            "VALUES (%s, %s, 'suspend', 'campaign', %s)",
            [tenant, uuid.uuid4(), str(ids[0])],
        )


def _seed_queue(conn: psycopg.Connection, tenant: uuid.UUID, _refs: dict[str, object]) -> None:
    """As the owner: the app role only reads the queue's tables (its writes go through the functions)."""
    if conn.execute("SELECT to_regclass('app.scheduled_jobs') IS NOT NULL").fetchone()[0]:
        _seed_queue_hybrid(conn, tenant)
        return
    with tenant_transaction(conn, tenant):
        job = conn.execute(
            "INSERT INTO app.jobs (tenant_id, queue_name, priority, payload) VALUES (%s, 'itest', 500, "
            "'{}') RETURNING id",
            [tenant],
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO app.job_logs (tenant_id, job_id, status, attempt_number) VALUES (%s, %s, "
            "'success', 1)",
            [tenant, job],
        )
        conn.execute(
            "INSERT INTO app.dead_letters (tenant_id, id, queue_name, priority, payload, attempts, "
            "max_attempts, "
            "enqueued_at) VALUES (%s, gen_random_uuid(), 'itest', 100, '{}', 3, 3, now())",
            [tenant],
        )


def _seed_queue_hybrid(conn: psycopg.Connection, tenant: uuid.UUID) -> None:
    """The tables of schemas/queue/0004 (jobs by state), one row each."""
    with tenant_transaction(conn, tenant):
        x = conn.execute
        job = x(
            "INSERT INTO app.jobs (tenant_id, queue_name, priority, payload, max_attempts) "
            "VALUES (%s, 'itest', 500, '{}', 3) RETURNING id",
            [tenant],
        ).fetchone()[0]
        ids = [
            row[0]
            for row in x(
                "SELECT nextval(pg_get_serial_sequence('app.jobs', 'id')) FROM generate_series(1, 3)"
            )
        ]
        x(
            "INSERT INTO app.scheduled_jobs (tenant_id, id, queue_name, priority, payload, attempts, max_attempts, "
            "enqueued_at, run_at) VALUES (%s, %s, 'itest', 500, '{}', 1, 3, now(), now() + interval '1 hour')",
            [tenant, ids[0]],
        )
        x(
            "INSERT INTO app.finished_jobs (tenant_id, id, queue_name, attempts, enqueued_at) "
            "VALUES (%s, %s, 'itest', 1, now())",
            [tenant, ids[1]],
        )
        x(
            "INSERT INTO app.job_failures (tenant_id, job_id, queue_name, attempt, outcome, error) "
            "VALUES (%s, %s, 'itest', 1, 'retry', 'seed')",
            [tenant, job],
        )
        x(
            "INSERT INTO app.dead_letters (tenant_id, id, queue_name, priority, payload, attempts, max_attempts, "
            "enqueued_at) VALUES (%s, %s, 'itest', 100, '{}', 3, 3, now())",
            [tenant, ids[2]],
        )


SEEDS: dict[str, Callable[[psycopg.Connection, uuid.UUID, dict[str, object]], None]] = {
    "oltp": _seed_oltp,
    "content": _seed_content,
    "analytics": _seed_analytics,
    "queue": _seed_queue,
}


# Who writes the seed rows: the app role through RLS, except where it may not write at all.
SEED_ROLES = {"queue": "migrator"}


def seed_tenants(db: TierDb, tenants: list[uuid.UUID]) -> None:
    refs = seed_platform(db)
    with db.connect(SEED_ROLES.get(db.tier, "app")) as conn:
        for tenant in tenants:
            SEEDS[db.tier](conn, tenant, refs)
