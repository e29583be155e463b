"""Warm-up state in a real OLTP tier: the warmup duty's functions, and what tenant-facing roles cannot do.

A scratch oltp tier (migrations and roles as the component makes them) with one sending IP and a tenant
holding an assignment to it. The warmup role starts, records, holds and resumes a plan through
``WarmupStore``; the app and readonly roles try to read or change warm-up state and are refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from psycopg import errors

from modules.postgres.client import connection_url
from modules.reputation.warmup import Action, Figures, IpState, WarmupPlan, decide
from modules.reputation.warmup_store import WarmupStore, WarmupStoreError
from tests.support.postgres import TierDb, provision, teardown
from tests.support.rls import set_tenant

pytestmark = pytest.mark.services

TENANT = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
IP = "192.0.2.77"
T0 = datetime(2025, 3, 1, 6, tzinfo=UTC)


@pytest.fixture(scope="module")
def db(devenv_env) -> Iterator[TierDb]:
    db = provision("oltp")
    try:
        with db.connect("migrator") as conn:
            vps = conn.execute(
                "INSERT INTO fleet.vps_instances (hostwinds_instance_id, ip_address, status) "
                "VALUES ('hw-w', %s, 'active') RETURNING id",
                [IP],
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO fleet.smtp_ip_addresses (vps_instance_id, ip_address, status) VALUES (%s, %s, 'assigned')",
                [vps, IP],
            )
        with db.connect("app") as conn, conn.transaction():
            set_tenant(conn, TENANT)
            conn.execute("INSERT INTO app.tenants (tenant_id, name) VALUES (%s, 'warm')", [TENANT])
            domain = conn.execute(
                "INSERT INTO app.domains (tenant_id, domain) VALUES (%s, 'warm.example') RETURNING id",
                [TENANT],
            ).fetchone()[0]
        with db.connect() as admin:  # the app cannot read fleet: the id comes from the owner
            ip_id = admin.execute(
                "SELECT id FROM fleet.smtp_ip_addresses WHERE ip_address = %s", [IP]
            ).fetchone()[0]
        with db.connect("app") as conn, conn.transaction():
            set_tenant(conn, TENANT)
            # A tenant claiming a warm IP gets the IP's real state instead.
            conn.execute(
                "INSERT INTO app.domain_ip_assignments (tenant_id, domain_id, smtp_ip_address_id, warmup_state) "
                "VALUES (%s, %s, %s, 'warmed')",
                [TENANT, domain, ip_id],
            )
        db.ip_id = ip_id
        yield db
    finally:
        teardown(db)


def store_of(db: TierDb) -> WarmupStore:
    t = db.target
    return WarmupStore(
        connection_url(db.role("warmup"), db.passwords["warmup"], t.host, t.port, db.database, t.sslmode)
    )


def assignment_state(db: TierDb) -> str:
    with db.connect("app") as conn, conn.transaction():
        set_tenant(conn, TENANT)
        return conn.execute("SELECT warmup_state FROM app.domain_ip_assignments").fetchone()[0]


def ip_status(db: TierDb) -> str:
    with db.connect() as admin:
        return admin.execute(
            "SELECT status FROM fleet.smtp_ip_addresses WHERE ip_address = %s", [IP]
        ).fetchone()[0]


def test_a_new_assignment_shows_the_ip_state_not_the_tenants_claim(db):
    assert assignment_state(db) == "unwarmed"


def test_the_warmup_role_starts_records_holds_and_resumes_a_plan(db):
    store, plan = store_of(db), WarmupPlan()
    assert store.start(IP, plan, 1, T0) is True
    assert store.start(IP, plan, 5, T0) is False  # an existing plan is left alone
    (stored,) = store.plans()
    assert (stored.state.day, stored.caps.daily, stored.caps.hourly) == (1, 200, 20)
    assert ip_status(db) == "warming" and assignment_state(db) == "warming"

    decision = decide(
        plan, stored.state, T0 + timedelta(days=1), Figures(delivered=190, deferred=5, bounced=1)
    )
    assert decision.action == Action.ADVANCE
    assert store.record(IP, 1, decision, T0 + timedelta(days=1), T0 + timedelta(hours=20)) is True
    assert store.record(IP, 1, decision, T0 + timedelta(days=1), None) is False  # the plan moved meanwhile
    (stored,) = store.plans()
    assert stored.state.day == 2 and stored.caps.daily == plan.daily_cap(2)
    assert stored.state.last_advanced_at == T0 + timedelta(days=1)
    assert stored.last_decision["action"] == "advance"

    store.hold(IP, True, "complaints from a tenant")
    (stored,) = store.plans()
    assert stored.state.held and stored.held_reason == "complaints from a tenant"
    advance = decide(plan, IpState(day=2), T0 + timedelta(days=3), Figures(delivered=500))
    with pytest.raises(WarmupStoreError, match="is held on day 2"):
        store.record(IP, 2, advance, T0 + timedelta(days=3), None)
    store.hold(IP, False)
    (stored,) = store.plans()
    assert not stored.state.held and stored.held_reason is None


def test_the_last_day_marks_ip_and_assignments_warmed(db):
    store, plan = store_of(db), WarmupPlan()
    (stored,) = store.plans()
    last = decide(plan, IpState(day=plan.days - 1), T0 + timedelta(days=40), Figures(delivered=900))
    assert last.day == plan.days
    assert store.record(IP, stored.state.day, last, T0 + timedelta(days=40), None)
    assert ip_status(db) == "warmed" and assignment_state(db) == "warmed"


def test_hold_of_an_unknown_ip_is_a_clear_error(db):
    with pytest.raises(WarmupStoreError, match=r"no sending IP 198\.51\.100\.9"):
        store_of(db).hold("198.51.100.9", True)


@pytest.mark.parametrize("kind", ["app", "readonly"])
def test_tenant_facing_roles_cannot_read_or_change_warmup_state(db, kind):
    attacks = [
        "SELECT * FROM warmup.plans()",
        f"SELECT warmup.plan_hold('{IP}', false, NULL)",
        f"SELECT warmup.plan_record('{IP}', 1, 21, 20000, 2000, '{{}}', '{{}}', true, now(), now())",
        "SELECT * FROM fleet.ip_warmup_plans",
        "UPDATE fleet.ip_warmup_plans SET day = 21",
        "SELECT * FROM fleet.ip_assignment_tenants",
        "SELECT internal.warmup_state_of(NULL)",
        "UPDATE app.domain_ip_assignments SET warmup_state = "
        "CASE warmup_state WHEN 'warmed' THEN 'unwarmed' ELSE 'warmed' END",
    ]
    refused = []
    with db.connect(kind) as conn:
        for statement in attacks:
            with conn.transaction(force_rollback=True):
                conn.execute("SET TRANSACTION READ WRITE")
                set_tenant(conn, TENANT)
                try:
                    with conn.transaction():
                        conn.execute(statement)
                except (errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction):
                    refused.append(statement)
    assert refused == attacks
    # Re-pointing an assignment does not carry a state over either.
    if kind == "app":
        with db.connect("app") as conn, conn.transaction(force_rollback=True):
            set_tenant(conn, TENANT)
            conn.execute("UPDATE app.domain_ip_assignments SET smtp_ip_address_id = smtp_ip_address_id")
            assert (
                conn.execute("SELECT warmup_state FROM app.domain_ip_assignments").fetchone()[0] == "warmed"
            )


def test_the_warmup_role_touches_no_table(db):
    with db.connect() as admin:
        tables = admin.execute(
            """SELECT c.oid::regclass::text FROM pg_class c WHERE c.relkind IN ('r', 'p', 'v')
                 AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
                 AND (has_table_privilege(%(r)s, c.oid, 'SELECT') OR has_table_privilege(%(r)s, c.oid, 'UPDATE')
                      OR has_table_privilege(%(r)s, c.oid, 'INSERT') OR has_table_privilege(%(r)s, c.oid, 'DELETE'))""",
            {"r": db.role("warmup")},
        ).fetchall()
        schemas = admin.execute(
            "SELECT nspname FROM pg_namespace WHERE has_schema_privilege(%s, oid, 'USAGE') AND nspname NOT LIKE 'pg\\_%%' "
            "AND nspname NOT IN ('information_schema', 'public')",
            [db.role("warmup")],
        ).fetchall()
    assert tables == []
    assert schemas == [("warmup",)]
    with db.connect("warmup") as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM fleet.ip_warmup_plans")


def test_a_job_cycle_starts_missing_plans_and_decides_the_others(db):
    from modules.reputation.warmup_job import HostLog, run_cycle

    with db.connect("migrator") as conn:
        vps = conn.execute(
            "SELECT vps_instance_id FROM fleet.smtp_ip_addresses WHERE ip_address = %s", [IP]
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO fleet.smtp_ip_addresses (vps_instance_id, ip_address) VALUES (%s, '192.0.2.78')",
            [vps],
        )
    now = T0 + timedelta(days=45)
    line = (
        f"{now:%b %d %H:%M:%S} mx-1 postfix/smtp-ip1/smtp[9]: 4B1: to=<a@example.org>, relay=x[192.0.2.9]:25, "
        "delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)"
    )
    logs = [HostLog([line], {"ip1": IP, "ip2": "192.0.2.78"})]
    results = {r.ip: r for r in run_cycle(store_of(db), logs, WarmupPlan(), 4, now + timedelta(minutes=1))}
    assert results["192.0.2.78"].started is True
    assert results[IP].figures.delivered == 1 and results[IP].decision.action == Action.WAIT
    plans = {p.ip: p for p in store_of(db).plans()}
    assert plans["192.0.2.78"].state.day == 4 and plans["192.0.2.78"].caps.daily == WarmupPlan().daily_cap(4)
    assert plans[IP].last_decision["figures"]["delivered"] == 1
