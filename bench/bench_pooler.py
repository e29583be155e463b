"""PgBouncer: tenant-scoped OLTP transaction latency at 200 concurrent clients, pooled against direct.

An OLTP tier of its own (provisioned as the component does it, ``PM_BENCH_POOL_TENANTS`` tenants with
``PM_BENCH_POOL_LEADS`` leads each) on the devenv PostgreSQL. Each client process runs threads, each with
its own connection, doing one tenant transaction after another for ``PM_BENCH_POOL_SECONDS``: set the
tenant (``set_config(…, true)``), look a lead up by email, count the tenant's leads, update one lead.

Modes:

* ``direct``: 200 clients straight to PostgreSQL as the app role (its connection limit is 100 and the
  server's ``max_connections`` 200, so the refused logins are part of the result), and 80 clients (the
  pool's size) for a latency at the same server concurrency;
* ``pooled``: 200 clients through the devenv PgBouncer (transaction mode, the OLTP pool of 80);
* ``pooled, no reset``: the same through a private PgBouncer without ``server_reset_query_always``, which
  prices the ``DISCARD ALL`` that runs after every transaction;
* ``serial_pool_of_1``: one client through a pool of one server connection, with and without the reset,
  alternated round by round (on a loaded machine the 200-client figures are too noisy to price it).

Needs the devenv postgres and pgbouncer running (``python -m devenv start``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

CTX = mp.get_context("fork")
TENANTS = int(os.environ.get("PM_BENCH_POOL_TENANTS", "400"))
LEADS = int(os.environ.get("PM_BENCH_POOL_LEADS", "200"))
SECONDS = float(os.environ.get("PM_BENCH_POOL_SECONDS", "15"))
PROCESSES = int(os.environ.get("PM_BENCH_POOL_PROCESSES", "10"))


def _client_process(conninfo: dict, tenants: list[str], threads: int, seconds: float, out) -> None:
    """``threads`` clients; puts (latencies in ms, refused logins, errors during the run) on ``out``."""
    import psycopg

    from modules.postgres.client import tenant_transaction

    latencies: list[float] = []
    refused: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    start_at = time.monotonic() + 3  # every client connects first, then all start together

    def client(seed: int) -> None:
        rng = random.Random(seed)
        try:
            conn = psycopg.connect(**conninfo, autocommit=True, prepare_threshold=None, connect_timeout=30)
        except psycopg.Error as exc:
            with lock:
                refused.append(str(exc).strip().splitlines()[-1][:120])
            return
        mine: list[float] = []
        with conn:
            time.sleep(max(0.0, start_at - time.monotonic()))
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                tenant = rng.choice(tenants)
                email = f"lead{rng.randrange(LEADS)}@example.org"
                began = time.perf_counter()
                try:
                    with tenant_transaction(conn, tenant):
                        conn.execute(
                            "SELECT id, name FROM app.leads WHERE tenant_id = %s AND email = %s",
                            [tenant, email],
                        ).fetchall()
                        conn.execute(
                            "SELECT count(*) FROM app.leads WHERE tenant_id = %s", [tenant]
                        ).fetchone()
                        conn.execute(
                            "UPDATE app.leads SET name = %s WHERE tenant_id = %s AND email = %s",
                            [f"n{seed}", tenant, email],
                        )
                except psycopg.Error as exc:
                    with lock:
                        errors.append(str(exc).strip()[:120])
                    continue
                mine.append((time.perf_counter() - began) * 1000)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=client, args=(hash((os.getpid(), i)),)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put((latencies, refused, errors))


def _measure(conninfo: dict, tenants: list[str], clients: int) -> dict[str, object]:
    out = CTX.Queue()
    per = [clients // PROCESSES + (1 if i < clients % PROCESSES else 0) for i in range(PROCESSES)]
    procs = [CTX.Process(target=_client_process, args=(conninfo, tenants, n, SECONDS, out)) for n in per if n]
    for proc in procs:
        proc.start()
    latencies: list[float] = []
    refused: list[str] = []
    errors: list[str] = []
    for _ in procs:
        lat, ref, err = out.get(timeout=SECONDS + 120)
        latencies += lat
        refused += ref
        errors += err
    for proc in procs:
        proc.join()
    latencies.sort()

    def pct(p: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))], 2) if latencies else None

    return {
        "clients": clients,
        "connected": clients - len(refused),
        "refused": len(refused),
        "refused_reasons": sorted(set(refused))[:3],
        "errors": len(errors),
        "error_reasons": sorted(set(errors))[:3],
        "transactions": len(latencies),
        "tx_per_s": round(len(latencies) / SECONDS, 1),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
    }


def _serial_ab(conninfos: dict[str, dict], tenants: list[str], rounds: int = 6, per_round: int = 300) -> dict:
    """One client, one server connection (a pool of 1), the modes alternated round by round so the
    machine's load falls on both alike: what ``DISCARD ALL`` after each transaction adds when the pool is
    the bottleneck (the next transaction waits for the reset)."""
    import psycopg

    from modules.postgres.client import tenant_transaction

    samples: dict[str, list[float]] = {mode: [] for mode in conninfos}
    conns = {
        mode: psycopg.connect(**info, autocommit=True, prepare_threshold=None)
        for mode, info in conninfos.items()
    }
    rng = random.Random(7)
    try:
        for round_ in range(rounds):
            order = list(conns.items())
            for mode, conn in order if round_ % 2 == 0 else order[::-1]:
                for _ in range(per_round):
                    tenant = rng.choice(tenants)
                    began = time.perf_counter()
                    with tenant_transaction(conn, tenant):
                        conn.execute(
                            "SELECT count(*) FROM app.leads WHERE tenant_id = %s", [tenant]
                        ).fetchone()
                    samples[mode].append((time.perf_counter() - began) * 1000)
    finally:
        for conn in conns.values():
            conn.close()
    out = {}
    for mode, values in samples.items():
        values.sort()
        out[mode] = {
            "transactions": len(values),
            "p50_ms": round(values[len(values) // 2], 3),
            "p95_ms": round(values[int(len(values) * 0.95)], 3),
        }
    return out


def _seed(db, tenants: list[uuid.UUID]) -> None:
    from modules.postgres.client import tenant_transaction

    with db.connect("app") as conn:
        for tenant in tenants:
            with tenant_transaction(conn, tenant):
                conn.execute("INSERT INTO app.tenants (tenant_id, name) VALUES (%s, 'bench')", [tenant])
                conn.execute(
                    "INSERT INTO app.leads (tenant_id, email, name) SELECT %s, 'lead' || i || '@example.org', 'x' "
                    "FROM generate_series(0, %s - 1) i",
                    [tenant, LEADS],
                )
    with db.connect() as conn:
        conn.execute("ANALYZE app.leads")


def run() -> dict[str, object]:
    from devenv.base import devenv_root
    from devenv.pgbouncer import PgBouncerService
    from devenv.postgres import PostgresService
    from modules.postgres import pooler as pgb
    from tests.support import pooler as support
    from tests.support.postgres import provision, teardown

    postgres, bouncer = PostgresService(), PgBouncerService()
    if not (postgres.running() and bouncer.running()):
        raise SystemExit("bench_pooler: start the devenv first (python -m devenv start postgres pgbouncer)")
    os.environ.update(postgres.env())
    os.environ.update(bouncer.env())
    db = provision("oltp", prefix=f"pm_bench_pool_{os.getpid()}")
    tenants = [uuid.uuid4() for _ in range(TENANTS)]
    results: dict[str, object] = {"tenants": TENANTS, "leads_per_tenant": LEADS, "seconds_per_mode": SECONDS}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreset = PgBouncerService(
        root=Path(tempfile.mkdtemp(prefix="bench-pool-", dir=devenv_root())), port=port, reset_always=False
    )
    try:
        started = time.perf_counter()
        _seed(db, tenants)
        results["seed_s"] = round(time.perf_counter() - started, 1)
        names = [str(t) for t in tenants]
        login = {"user": db.role("app"), "password": db.passwords["app"]}
        direct = {**login, "host": db.target.host, "port": db.target.port, "dbname": db.database}
        results["direct_200"] = _measure(direct, names, 200)
        results["direct_80"] = _measure(direct, names, 80)
        with support.pool(db, pool_size=pgb.POOL_SIZES["oltp"]) as pooled:
            conninfo = {**login, "host": pooled.pooled.host, "port": pooled.pooled.port, "sslmode": "require"}
            results["pooled_200"] = _measure({**conninfo, "dbname": pooled.pooled_alias}, names, 200)
        unreset.start()
        env = unreset.env()
        target = pgb.PoolerTarget(
            unreset.host,
            port,
            env[pgb.ENV_ADMIN_USER],
            env[pgb.ENV_ADMIN_PASSWORD],
            unreset.ca_file,
            databases_file=unreset.databases_file,
        )
        with support.pool(db, pool_size=pgb.POOL_SIZES["oltp"], pooler=target) as pooled:
            conninfo = {**login, "host": unreset.host, "port": port, "sslmode": "require"}
            results["pooled_200_no_reset"] = _measure({**conninfo, "dbname": pooled.pooled_alias}, names, 200)
        one = f"{db.database}_one"
        with (
            support.pool(db, pool_size=1, alias=one) as shared_one,
            support.pool(db, pool_size=1, alias=one, pooler=target),
        ):
            tls = {**login, "sslmode": "require", "dbname": one}
            results["serial_pool_of_1"] = _serial_ab(
                {
                    "reset": {**tls, "host": shared_one.pooled.host, "port": shared_one.pooled.port},
                    "no_reset": {**tls, "host": unreset.host, "port": port},
                },
                names,
            )
    finally:
        unreset.stop()
        shutil.rmtree(unreset.dir.parent, ignore_errors=True)
        teardown(db)
    return results


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    print(json.dumps(run(), indent=2))
