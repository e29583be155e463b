"""The devenv PgBouncer in front of a real tier: tenant isolation through a small shared pool, the auth lookup
function under attack, TLS on both sides, and the ``PoolerDatabase`` provider's apply, drift and delete.

An OLTP tier is provisioned as the component does it and seeded with many tenants; its login roles reach
it through the pooler (tests/support/pooler.py). A second PgBouncer of this module's own, without
``server_reset_query_always``, shows the leak that setting closes, so the leak test can fail.
"""

from __future__ import annotations

import random
import secrets
import shutil
import socket
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import errors, sql

from devenv.base import devenv_root
from devenv.pgbouncer import AUTH_ROLE, PgBouncerService
from modules.postgres import admin as pg_admin
from modules.postgres import pooler as pgb
from modules.postgres.client import tenant_transaction
from modules.providers import ProviderSettings
from tests.support import pooler as support
from tests.support.postgres import TierDb, provision, seed_tenants, teardown
from tests.support.rls import parent_tables, table_privileges

pytestmark = pytest.mark.services

TENANTS = [uuid.UUID(int=0x1000 + i) for i in range(60)]


@pytest.fixture(scope="module")
def oltp(devenv_env) -> Iterator[TierDb]:
    db = provision("oltp")
    try:
        seed_tenants(db, TENANTS)
        yield db
    finally:
        teardown(db)


@pytest.fixture(scope="module")
def visible(oltp) -> dict[str, dict[uuid.UUID, int]]:
    """Per tenant table the app role may read: each tenant's row count, as the admin sees it."""
    with oltp.connect() as admin:
        tables = [t for t in parent_tables(admin) if "SELECT" in table_privileges(admin, oltp.role("app"), t)]
        counts = {}
        for table in tables:
            query = sql.SQL("SELECT tenant_id, count(*) FROM {} GROUP BY 1").format(table.ident)
            counts[str(table)] = dict(admin.execute(query).fetchall())
    assert len(counts) >= 10 and all(counts.values()), counts
    return counts


def _union(tables: list[str]) -> sql.Composed:
    """One statement reading tenant_id from every table: (table, tenant_id) rows."""
    parts = [
        sql.SQL("SELECT {}::text, tenant_id FROM {}").format(sql.Literal(t), sql.Identifier(*t.split(".")))
        for t in tables
    ]
    return sql.SQL(" UNION ALL ").join(parts)


def test_interleaved_tenants_through_a_pool_of_two_never_see_another_tenants_row(oltp, visible):
    """24 clients, 60 tenants, 2 server connections: every transaction sets its tenant with set_config(…,
    true) and reads every tenant table; each row must be its own tenant's, each count its own. Between them,
    clients set another tenant at session level and then run a transaction that sets none: it must see
    nothing, whichever server connection it lands on."""
    query = _union(sorted(visible))
    failures: list[str] = []
    pids: Counter[int] = Counter()
    tenants_by_pid: dict[int, set[uuid.UUID]] = {}
    lock = threading.Lock()

    def client(pooled: TierDb, seed: int) -> None:
        rng = random.Random(seed)
        with pooled.connect("app", autocommit=True) as conn:
            for round_ in range(40):
                tenant = rng.choice(TENANTS)
                with tenant_transaction(conn, tenant):
                    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                    rows = conn.execute(query).fetchall()
                seen = Counter(table for table, _t in rows)
                bad = [f"{table}: row of {t}" for table, t in rows if t != tenant]
                bad += [
                    f"{table}: {seen[table]} rows, tenant has {counts.get(tenant, 0)}"
                    for table, counts in visible.items()
                    if seen[table] != counts.get(tenant, 0)
                ]
                if (
                    round_ % 5 == 0
                ):  # a careless client: a session-level tenant, then a transaction without one
                    conn.execute("SELECT set_config('app.tenant_id', %s, false)", [str(rng.choice(TENANTS))])
                    with conn.transaction():
                        leaked = conn.execute(query).fetchall()
                    if leaked:
                        bad.append(f"a transaction without a tenant saw {len(leaked)} rows")
                with lock:
                    failures.extend(f"client {seed} as {tenant}: {b}" for b in bad)
                    pids[pid] += 1
                    tenants_by_pid.setdefault(pid, set()).add(tenant)

    with support.pool(oltp, pool_size=2, alias=f"{oltp.database}_two") as pooled:
        threads = [threading.Thread(target=client, args=(pooled, seed)) for seed in range(24)]
        done = threading.Event()
        peak = [0]

        def watch() -> None:  # the server's view: how many connections of the app role are open at once
            with oltp.connect() as admin:
                while not done.wait(0.02):
                    open_ = admin.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND datname = %s",
                        [oltp.role("app"), oltp.database],
                    ).fetchone()[0]
                    peak[0] = max(peak[0], open_)

        watcher = threading.Thread(target=watch)
        watcher.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        done.set()
        watcher.join()
        assert not any(thread.is_alive() for thread in threads), "clients did not finish"
    assert not failures, "\n".join(failures[:30])
    assert sum(pids.values()) == 24 * 40
    # The pool really was shared: never more than 2 server connections at once (PgBouncer may replace one
    # to make room for its auth_query connection), each serving many tenants.
    assert 1 <= peak[0] <= 2, peak
    assert max(len(t) for t in tenants_by_pid.values()) >= 30, {p: len(t) for p, t in tenants_by_pid.items()}


def _leak(pooled: TierDb) -> tuple[int, int, int, str | None]:
    """Client X sets tenant B at session level and leaves; client Y, on the same server connection, runs a
    transaction without a tenant: (X's pid, Y's pid, rows Y saw, the setting Y found)."""
    tenant_b = TENANTS[1]
    with pooled.connect("app", autocommit=True) as x:
        x.execute(sql.SQL("SET app.tenant_id = {}").format(sql.Literal(str(tenant_b))))
        x_pid = x.execute("SELECT pg_backend_pid()").fetchone()[0]
    with pooled.connect("app", autocommit=True) as y, y.transaction():
        y_pid = y.execute("SELECT pg_backend_pid()").fetchone()[0]
        seen = y.execute("SELECT count(*) FROM app.leads").fetchone()[0]
        setting = y.execute("SELECT current_setting('app.tenant_id', true)").fetchone()[0]
    return x_pid, y_pid, seen, setting


def test_a_session_level_tenant_never_reaches_the_next_client(oltp):
    """DISCARD ALL after every transaction (server_reset_query_always): Y gets X's server connection (one
    in the pool) and finds no tenant setting, so it sees no row."""
    with support.pool(oltp, pool_size=1, alias=f"{oltp.database}_one") as pooled:
        x_pid, y_pid, seen, setting = _leak(pooled)
    assert x_pid == y_pid, "the pool of one did not hand X's server connection to Y"
    assert seen == 0 and not setting, (seen, setting)


@pytest.fixture(scope="module")
def unreset_pooler(devenv_env) -> Iterator[pgb.PoolerTarget]:
    """A private PgBouncer in front of the shared cluster with ``server_reset_query_always = 0``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(tempfile.mkdtemp(prefix="pool-unreset-", dir=devenv_root()))
    service = PgBouncerService(root=root, port=port, reset_always=False)
    service.start()
    try:
        env = service.env()
        yield pgb.PoolerTarget(
            service.host,
            port,
            env[pgb.ENV_ADMIN_USER],
            env[pgb.ENV_ADMIN_PASSWORD],
            service.ca_file,
            AUTH_ROLE,
            service.databases_file,
        )
    finally:
        service.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_without_the_reset_a_session_level_tenant_does_leak(oltp, unreset_pooler):
    """The control: the same two clients through a pooler that does not reset — Y sees tenant B's rows. This
    is what the setting above (and set_config(…, true) in every tenant transaction) is for."""
    with support.pool(oltp, pool_size=1, alias=f"{oltp.database}_unreset", pooler=unreset_pooler) as pooled:
        x_pid, y_pid, seen, setting = _leak(pooled)
        # The tenant transaction's own setting still wins over the leaked one.
        with pooled.connect("app") as z, tenant_transaction(z, TENANTS[2]):
            own = {r[0] for r in z.execute("SELECT tenant_id FROM app.leads")}
    assert x_pid == y_pid
    assert seen > 0 and setting == str(TENANTS[1]), (seen, setting)
    assert own == {TENANTS[2]}


# -------------------------------------------------------------------------------------- the auth lookup


def _lookup(conn: psycopg.Connection, role: str) -> list[tuple]:
    return conn.execute("SELECT usename FROM pgbouncer.user_lookup(%s)", [role]).fetchall()


@pytest.fixture(scope="module")
def pooled_oltp(oltp) -> Iterator[TierDb]:
    with support.pool(oltp, pool_size=4) as pooled:
        yield pooled


def test_the_lookup_answers_only_for_the_tiers_own_login_roles(oltp, pooled_oltp):
    """Superusers, the database owner (the migrator), roles of other prefixes or tiers, BYPASSRLS or
    replication roles, roles without CONNECT here: no row, so PgBouncer refuses their login."""
    outsiders = {
        "other_tier": (f"{oltp.prefix}_content_app", "LOGIN", True),
        "no_connect": (f"{oltp.prefix}_oltp_noconnect", "LOGIN", False),
        "bypass": (f"{oltp.prefix}_oltp_bypass", "LOGIN BYPASSRLS", True),
        "replication": (f"{oltp.prefix}_oltp_repl", "LOGIN REPLICATION", True),
        "nologin": (f"{oltp.prefix}_oltp_nologin", "NOLOGIN", True),
        "other_prefix": ("pool_outsider_oltp_app", "LOGIN", True),
    }
    password = secrets.token_urlsafe(18)
    with oltp.connect() as admin:
        for role, flags, connect_ in outsiders.values():
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            admin.execute(
                sql.SQL("CREATE ROLE {} " + flags + " PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
            if connect_:
                admin.execute(
                    sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                        sql.Identifier(oltp.database), sql.Identifier(role)
                    )
                )
        try:
            assert _lookup(admin, oltp.role("app")) == [(oltp.role("app"),)]
            assert _lookup(admin, oltp.role("readonly")) == [(oltp.role("readonly"),)]
            refused = [
                oltp.target.user,
                oltp.role("migrator"),
                AUTH_ROLE,
                *(r for r, _f, _c in outsiders.values()),
            ]
            answered = {role: _lookup(admin, role) for role in refused}
            assert {role: rows for role, rows in answered.items() if rows} == {}
            # Through the pooler: the admin and an outsider with a valid password are refused.
            pooler = support.target()
            for user, secret in [
                (oltp.target.user, oltp.target.password),
                (outsiders["other_prefix"][0], password),
            ]:
                with pytest.raises(psycopg.OperationalError):
                    psycopg.connect(
                        host=pooler.host,
                        port=pooler.port,
                        user=user,
                        password=secret,
                        dbname=pooled_oltp.pooled_alias,
                        sslmode="require",
                        connect_timeout=10,
                    ).close()
        finally:
            for role, _flags, _c in outsiders.values():
                pg_admin.role_drop(oltp.target, role, oltp.database)


def test_only_the_auth_role_may_run_the_lookup_and_it_reads_nothing_else(oltp, pooled_oltp):
    with oltp.connect("app") as app:
        exc = _error(app, "SELECT * FROM pgbouncer.user_lookup('postgres')")
        assert isinstance(exc, errors.InsufficientPrivilege), exc
    auth = psycopg.connect(
        host=oltp.target.host,
        port=oltp.target.port,
        user=AUTH_ROLE,
        password=PgBouncerService().auth_password(),
        dbname=oltp.database,
        autocommit=True,
    )
    with auth:
        assert _lookup(auth, oltp.role("app")) == [(oltp.role("app"),)]
        for statement in ("SELECT count(*) FROM pg_shadow", "SELECT count(*) FROM pg_authid"):
            assert isinstance(_error(auth, statement), errors.InsufficientPrivilege), statement
        rights = auth.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication FROM pg_roles "
            "WHERE rolname = current_user"
        ).fetchone()
        assert rights == (False, False, False, False, False)
        tables = auth.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('app', 'platform', 'fleet') AND has_table_privilege(c.oid, 'SELECT')"
        ).fetchone()[0]
        assert tables == 0
    with oltp.connect() as admin:
        assert pgb.lookup_problems(admin, f"{oltp.prefix}_oltp_", AUTH_ROLE) == []


def _error(conn: psycopg.Connection, statement: str) -> psycopg.Error | None:
    try:
        conn.execute(statement)
    except psycopg.Error as exc:
        return exc
    return None


# ------------------------------------------------------------------------------------------------- TLS


def test_tls_on_both_sides(pooled_oltp):
    pooler = support.target()
    login = dict(
        host=pooler.host,
        port=pooler.port,
        user=pooled_oltp.role("app"),
        password=pooled_oltp.passwords["app"],
        dbname=pooled_oltp.pooled_alias,
        connect_timeout=10,
    )
    with pytest.raises(psycopg.OperationalError):  # client_tls_sslmode = require
        psycopg.connect(**login, sslmode="disable").close()
    with pytest.raises(psycopg.OperationalError):  # client_tls_protocols = tlsv1.3
        psycopg.connect(**login, sslmode="require", ssl_max_protocol_version="TLSv1.2").close()
    with psycopg.connect(**login, sslmode="verify-full", sslrootcert=str(support.ca_file())) as conn:
        assert conn.pgconn.ssl_in_use
        # PgBouncer's own connection to PostgreSQL (verify-full against the devenv CA), seen by the server.
        row = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row == (True, "TLSv1.3")
    # The server's TLS is optional for its direct clients: a plain loopback login still works.
    with pooled_oltp.connect("admin") as admin:
        direct = dict(
            host=admin.info.host,
            port=admin.info.port,
            user=pooled_oltp.role("app"),
            password=pooled_oltp.passwords["app"],
            dbname=pooled_oltp.database,
        )
    with psycopg.connect(**direct, sslmode="disable") as plain:
        assert not plain.pgconn.ssl_in_use


def test_migrations_keep_their_direct_url(oltp, pooled_oltp):
    """A session advisory lock (what the migrations serialise on) taken through the pooler is gone once the
    statement's transaction ends (DISCARD ALL), so migrations use the direct URL; the migrator (the database
    owner) cannot even log in through the pooler."""
    with pooled_oltp.connect("app", autocommit=True) as app:
        assert app.execute("SELECT pg_try_advisory_lock(20557, 99)").fetchone() == (True,)
        with oltp.connect() as admin:
            held = admin.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 20557 AND objid = 99"
            ).fetchone()
        assert held == (0,)
    pooler = support.target()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host=pooler.host,
            port=pooler.port,
            user=pooled_oltp.role("migrator"),
            password=pooled_oltp.passwords["migrator"],
            dbname=pooled_oltp.pooled_alias,
            sslmode="require",
            connect_timeout=10,
        ).close()


# ------------------------------------------------------------------------------------------ the provider


def test_pooler_database_provider_applies_reads_drift_and_deletes(devenv_env):
    db = provision("content")
    provider = pgb.PoolerDatabaseProvider()
    props = {
        "tier": "content",
        "database": db.database,
        "role_prefix": f"{db.prefix}_content_",
        "pool_size": 7,
    }
    pooler = support.target()
    try:
        bad = provider.check({}, {**props, "pool_size": 0, "role_prefix": "Bad"})
        assert {f.property for f in bad.failures} == {"pool_size", "role_prefix"}
        outs = provider.create(dict(props)).outs
        assert (outs["host"], outs["port"], outs["drift"]) == (pooler.host, pooler.port, [])
        live = pgb.show_databases(pooler)[db.database]
        assert (live["pool_size"], live["max_connections"], live["database"]) == (7, 9, db.database)
        assert provider.read(db.database, outs).outs["drift"] == []
        with support.pool(db, pool_size=7) as pooled, pooled.connect("app") as conn:
            assert conn.execute("SELECT current_user").fetchone() == (db.role("app"),)
        # Drift: another pool size in the file, PUBLIC may run the lookup, its body is widened.
        pgb.set_entry(
            pooler, db.database, pgb.entry_line(db.database, db.target.host, db.target.port, db.database, 3)
        )
        with db.connect() as admin:
            admin.execute("GRANT EXECUTE ON FUNCTION pgbouncer.user_lookup(text) TO PUBLIC")
            admin.execute("CREATE TABLE pgbouncer.stash (usename name, passwd text)")
        drift = provider.read(db.database, outs).outs["drift"]
        assert any("pool_size 3" in d for d in drift) and any("PUBLIC" in d for d in drift), drift
        assert any("pgbouncer.stash is not the pooler's" in d for d in drift), drift
        outs = provider.update(db.database, outs, dict(props)).outs
        assert provider.read(db.database, outs).outs["drift"] == []
        provider.delete(db.database, outs)
        assert db.database not in pgb.show_databases(pooler)
        with db.connect() as admin:
            assert admin.execute("SELECT to_regnamespace('pgbouncer')").fetchone() == (None,)
    finally:
        pgb.set_entry(pooler, db.database, None)
        teardown(db)


def test_without_a_pooler_the_provider_names_the_next_step(monkeypatch):
    monkeypatch.delenv(pgb.ENV_HOST, raising=False)
    with pytest.raises(pgb.PoolerError, match="devenv start pgbouncer"):
        pgb.pooler_target(ProviderSettings())
