"""The hybrid queue end to end against the floor of the server, side by side in one run.

* floor: a plain ``DELETE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT 10) RETURNING`` loop on a
  table of the same database, 20,000 rows, 4 worker processes (what the issue measured at ~47,000 rows/s),
  from Python (psycopg, like the workers) and from ``pgbench`` (4 C clients, prepared: the server alone);
* drain: 20,000 jobs enqueued first (app role, 100 tenants, 200 per statement), then 1, 4 and 16 worker
  processes (batch 10, one of them running the mover) claim, run and complete them all;
* end to end: the same, with the producers enqueueing while the workers run (enqueue → complete);
* latency: 4 idle workers; a producer enqueues 1,000 jobs one per transaction, ~200/s; enqueue-to-start is
  the handler's wall clock minus the producer's commit (and minus the job's ``enqueued_at``, its
  transaction's start).

Processes, not threads, on both sides: Python's GIL would otherwise be what is measured.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid

import psycopg

from modules.postgres.client import connection_url, tenant_transaction
from modules.queue.store import enqueue
from modules.queue.worker import QueueWorker

JOBS = int(os.environ.get("PM_BENCH_QUEUE_JOBS", "20000"))
BATCH = 100  # the worker's claim and completion batch (the floor is also measured at 10, as the issue did)
TENANTS = [uuid.UUID(int=n) for n in range(1, 101)]
CTX = mp.get_context("fork")


def _urls(db) -> tuple[str, str, str]:
    def url(kind: str) -> str:
        return connection_url(
            db.role(kind), db.passwords[kind], db.target.host, db.target.port, db.database, "disable"
        )

    redis_url = "redis://default:{}@{}:{}/0".format(
        os.environ["PENGUINMAILS_REDIS_ADMIN_PASSWORD"],
        os.environ.get("PENGUINMAILS_REDIS_HOST", "127.0.0.1"),
        os.environ.get("PENGUINMAILS_REDIS_PORT", "6390"),
    )
    return url("app"), url("worker"), redis_url


def _floor_worker(dsn: str, done, batch: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "DELETE FROM bench_floor WHERE id IN (SELECT id FROM bench_floor ORDER BY id LIMIT %s "
                "FOR UPDATE SKIP LOCKED) RETURNING id, payload",
                [batch],
                prepare=True,
            ).fetchall()
            if not rows:
                return
            with done.get_lock():
                done.value += len(rows)


def _floor_dsn(db) -> str:
    return connection_url(
        db.target.user, db.target.password, db.target.host, db.target.port, db.database, "disable"
    )


def _floor_table(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_floor")
        conn.execute("CREATE TABLE bench_floor (id bigserial PRIMARY KEY, payload jsonb NOT NULL)")
        conn.execute(
            "INSERT INTO bench_floor (payload) SELECT jsonb_build_object('n', n) FROM generate_series(1, %s) n",
            [JOBS],
        )
        conn.execute("VACUUM ANALYZE bench_floor")


def bench_floor_pgbench(db, batch: int, clients: int = 4) -> dict[str, object] | None:
    """The same DELETE loop from pgbench's C clients: what the server does with no client-side cost."""
    if shutil.which("pgbench") is None:
        return None
    dsn = _floor_dsn(db)
    _floor_table(dsn)
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        limit = int(batch)
        script.write(
            "DELETE FROM bench_floor WHERE id IN (SELECT id FROM bench_floor ORDER BY id "  # noqa: S608
            f"LIMIT {limit} FOR UPDATE SKIP LOCKED) RETURNING id, payload;\n"
        )
        script.flush()
        per_client = JOBS // batch // clients
        out = subprocess.run(
            [
                *("pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", str(clients)),
                *("-t", str(per_client), "-f", script.name, dsn),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    with psycopg.connect(dsn, autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM bench_floor").fetchone()[0]
        conn.execute("DROP TABLE bench_floor")
    tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
    return {
        "jobs": JOBS - left,
        "clients": clients,
        "batch": batch,
        "transactions_per_s": round(tps),
        "jobs_per_s": round(tps * batch),
    }


def bench_floor(db, batch: int, workers: int = 4) -> dict[str, object]:
    dsn = _floor_dsn(db)
    _floor_table(dsn)
    done = CTX.Value("i", 0)
    started = time.perf_counter()
    procs = [CTX.Process(target=_floor_worker, args=(dsn, done, batch)) for _ in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    elapsed = time.perf_counter() - started
    assert done.value == JOBS, done.value
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE bench_floor")
    return {
        "jobs": JOBS,
        "workers": workers,
        "batch": batch,
        "seconds": round(elapsed, 2),
        "jobs_per_s": round(JOBS / elapsed),
    }


def _enqueue_all(app_url: str, queue: str, total: int) -> float:
    started = time.perf_counter()
    per = total // len(TENANTS)
    with psycopg.connect(app_url) as app:
        for tenant in TENANTS:
            for offset in range(0, per, 200):
                with tenant_transaction(app, tenant):
                    enqueue(app, queue, [{"n": offset + i} for i in range(min(200, per - offset))])
    return time.perf_counter() - started


def _worker_proc(worker_url, redis_url, namespace, queue, mover, stop, latencies, batch=BATCH, done=None):
    def handle(job) -> None:
        if latencies is not None:
            now = time.time()
            latencies.put((job.id, now, (now - job.enqueued_at.timestamp()) * 1000))

    worker = QueueWorker(
        worker_url, redis_url, namespace, [queue], handle, batch=batch, mover=mover, wait_seconds=0.5
    )
    worker.start()
    reported = 0
    while not stop.wait(0.005):  # completions recorded in PostgreSQL, told to the timer without a query
        if done is not None and worker.stats.completed != reported:
            with done.get_lock():
                done.value += worker.stats.completed - reported
            reported = worker.stats.completed
    worker.stop()


def _finished(db, queue: str) -> int:
    with db.connect() as conn:
        return conn.execute(
            "SELECT count(*) FROM app.finished_jobs WHERE queue_name = %s", [queue]
        ).fetchone()[0]


def _run_workers(db, urls, namespace, queue, workers, total, produce: bool, batch: int = BATCH) -> dict:
    app_url, worker_url, redis_url = urls
    stop, done = CTX.Event(), CTX.Value("i", 0)
    procs = [
        CTX.Process(
            target=_worker_proc,
            args=(worker_url, redis_url, namespace, queue, i == 0, stop, None, batch, done),
        )
        for i in range(workers)
    ]
    enqueue_s = None
    if not produce:
        enqueue_s = _enqueue_all(app_url, queue, total)
        with db.connect() as conn:
            conn.execute("ANALYZE app.jobs")
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    if produce:
        producer = CTX.Process(target=_enqueue_all, args=(app_url, queue, total))
        producer.start()
    deadline = time.monotonic() + 600
    while done.value < total and time.monotonic() < deadline:  # no count(*) competing with the workers
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    stop.set()
    for proc in procs:
        proc.join(15)
    if produce:
        producer.join()
    finished = _finished(db, queue)
    assert finished == total, f"{queue}: {finished} of {total} finished"
    result = {
        "jobs": total,
        "workers": workers,
        "batch": batch,
        "seconds": round(elapsed, 2),
        "jobs_per_s": round(total / elapsed),
    }
    if enqueue_s is not None:
        result["enqueue_jobs_per_s"] = round(total / enqueue_s)
    return result


def _latency(db, urls, namespace) -> dict[str, object]:
    """Enqueue → start, from the producer's commit (when the job exists for anyone else) and from its
    transaction's start (``enqueued_at``, which also counts the producer's own round trips and fsync)."""
    app_url, worker_url, redis_url = urls
    count, stop, samples = 1000, CTX.Event(), CTX.Queue()
    procs = [
        CTX.Process(
            target=_worker_proc,
            args=(worker_url, redis_url, namespace, "bench-latency", i == 0, stop, samples),
        )
        for i in range(4)
    ]
    for proc in procs:
        proc.start()
    time.sleep(1.0)
    committed: dict[int, float] = {}
    with psycopg.connect(app_url) as producer:
        for n in range(count):
            with tenant_transaction(producer, TENANTS[n % len(TENANTS)]):
                (job_id,) = enqueue(producer, "bench-latency", [{"n": n}])
            committed[job_id] = time.time()
            time.sleep(0.005)
    started = [samples.get(timeout=30) for _ in range(count)]
    stop.set()
    for proc in procs:
        proc.join(15)
    from_txn = sorted(ms for _, _, ms in started)
    from_commit = sorted((at - committed[job_id]) * 1000 for job_id, at, _ in started)

    def at(values: list[float], q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 2)

    return {
        "jobs": count,
        "from_commit": {
            "p50_ms": at(from_commit, 0.5),
            "p95_ms": at(from_commit, 0.95),
            "p99_ms": at(from_commit, 0.99),
            "max_ms": round(from_commit[-1], 2),
        },
        "from_transaction_start": {
            "p50_ms": at(from_txn, 0.5),
            "p95_ms": at(from_txn, 0.95),
            "p99_ms": at(from_txn, 0.99),
            "max_ms": round(from_txn[-1], 2),
        },
    }


def run() -> dict:
    from tests.support.postgres import provision, teardown

    if "PENGUINMAILS_POSTGRES_ADMIN_PASSWORD" not in os.environ:
        from bench.bench_postgres import _devenv_env

        _devenv_env()
    db = provision("queue")
    namespace = f"queue:{{bench-{uuid.uuid4().hex[:6]}}}:"
    try:
        with db.connect("migrator") as conn:
            conn.execute(
                "INSERT INTO platform.job_queues (name, max_attempts, lock_duration) VALUES "
                "('bench-1', 3, '5 minutes'), ('bench-4', 3, '5 minutes'), ('bench-16', 3, '5 minutes'), "
                "('bench-e2e', 3, '5 minutes'), ('bench-latency', 3, '5 minutes'), ('bench-4b10', 3, '5 minutes')"
            )
        urls = _urls(db)
        result: dict[str, object] = {
            "floor_skip_locked_delete_batch10": bench_floor(db, 10),
            "floor_skip_locked_delete_batch100": bench_floor(db, 100),
            "floor_pgbench_batch10": bench_floor_pgbench(db, 10),
        }
        result["drain_4_workers_batch10"] = _run_workers(
            db, urls, namespace, "bench-4b10", 4, JOBS, produce=False, batch=10
        )
        for workers in (1, 4, 16):
            result[f"drain_{workers}_workers"] = _run_workers(
                db, urls, namespace, f"bench-{workers}", workers, JOBS, produce=False
            )
        result["end_to_end_4_workers"] = _run_workers(db, urls, namespace, "bench-e2e", 4, JOBS, produce=True)
        result["enqueue_to_start_4_workers"] = _latency(db, urls, namespace)
        floor = result["floor_skip_locked_delete_batch10"]["jobs_per_s"]
        result["drain_4_share_of_floor"] = round(result["drain_4_workers"]["jobs_per_s"] / floor, 2)
        result["end_to_end_4_share_of_floor"] = round(result["end_to_end_4_workers"]["jobs_per_s"] / floor, 2)
        if result["floor_pgbench_batch10"]:
            c_floor = result["floor_pgbench_batch10"]["jobs_per_s"]
            result["drain_4_share_of_pgbench_floor"] = round(
                result["drain_4_workers"]["jobs_per_s"] / c_floor, 2
            )
        return result
    finally:
        teardown(db)
        import redis

        client = redis.Redis.from_url(_urls(db)[2])
        for key in client.scan_iter(match=f"{namespace}*"):
            client.delete(key)
