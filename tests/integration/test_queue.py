"""The hybrid queue on real servers: the tenant's side, priorities, retries, dead letters, and faults.

Workers run as the tier's worker role and as a Redis user with the queue's ACL allow-list, each test in its
own namespace. Faults are real: Redis keys deleted mid-run (a flush, scoped to the namespace so the shared
server survives), a private redis-server killed with SIGKILL and restarted on its AOF, a worker process
killed while holding leases, a private PostgreSQL restarted mid-run.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter

import psycopg
import pytest
import redis
from psycopg import errors

from modules.postgres.client import connection_url, tenant_transaction
from modules.queue import ops
from modules.queue.mover import Mover
from modules.queue.redis_side import RedisSide
from modules.queue.store import WorkerStore, enqueue
from modules.queue.worker import QueueWorker, redis_client
from modules.redis.acl import user_rules
from tests.support.postgres import TierDb, private_cluster, provision, teardown

pytestmark = pytest.mark.services

TENANT_A, TENANT_B = uuid.UUID(int=0xA1), uuid.UUID(int=0xB2)
QUEUES = (
    "('t-order', 100, 3, '1 second', '1 minute', '1 minute')",
    "('t-retry', 100, 3, '50 milliseconds', '200 milliseconds', '1 minute')",
    "('t-load', 100, 5, '50 milliseconds', '200 milliseconds', '1 minute')",
    "('t-lease', 100, 5, '50 milliseconds', '100 milliseconds', '1500 milliseconds')",
    "('t-slow', 100, 5, '50 milliseconds', '100 milliseconds', '1500 milliseconds')",
)


def _url(db: TierDb, kind: str) -> str:
    return connection_url(
        db.role(kind), db.passwords[kind], db.target.host, db.target.port, db.database, "disable"
    )


def _add_queues(db: TierDb) -> None:
    with db.connect("migrator") as conn:
        values = ", ".join(QUEUES)  # constants of this file
        conn.execute(
            f"INSERT INTO platform.job_queues (name, default_priority, max_attempts, retry_base, retry_cap, "  # noqa: S608
            f"lock_duration) VALUES {values}"
        )


@pytest.fixture(scope="module")
def qdb(devenv_env) -> TierDb:
    db = provision("queue")
    try:
        _add_queues(db)
        yield db
    finally:
        teardown(db)


def _queue_user(admin: redis.Redis, host: str, port: int) -> str:
    """A Redis user with exactly the queue's ACL on ``queue:``; its URL."""
    name, password = f"itest-queue-{secrets.token_hex(3)}", secrets.token_urlsafe(16)
    admin.execute_command("ACL", "SETUSER", name, "reset", *user_rules(f">{password}", ["queue:"]))
    return f"redis://{name}:{password}@{host}:{port}/0"


@pytest.fixture(scope="module")
def shared_redis(devenv_env):
    host = os.environ["PENGUINMAILS_REDIS_HOST"]
    port = int(os.environ["PENGUINMAILS_REDIS_PORT"])
    admin = redis.Redis(host=host, port=port, password=os.environ["PENGUINMAILS_REDIS_ADMIN_PASSWORD"])
    url = _queue_user(admin, host, port)
    yield admin, url
    admin.execute_command("ACL", "DELUSER", url.split("//")[1].split(":")[0])


@pytest.fixture
def ns(shared_redis):
    admin, _ = shared_redis
    namespace = f"queue:{{itest-{uuid.uuid4().hex[:8]}}}:"
    yield namespace
    for key in admin.scan_iter(match=f"{namespace}*"):
        admin.delete(key)


def _enqueue(db: TierDb, tenant: uuid.UUID, queue: str, payloads: list, **kwargs) -> list[int]:
    with psycopg.connect(_url(db, "app")) as app, tenant_transaction(app, tenant):
        return enqueue(app, queue, payloads, **kwargs)


def _finished(db: TierDb, queue: str) -> set[int]:
    with db.connect() as conn:
        return {r[0] for r in conn.execute("SELECT id FROM app.finished_jobs WHERE queue_name = %s", [queue])}


def _wait(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# ------------------------------------------------------------------------------------- the tenant's side


def test_a_tenant_enqueues_only_for_itself_and_writes_no_queue_table(qdb):
    with psycopg.connect(_url(qdb, "app")) as app:
        with pytest.raises(errors.InsufficientPrivilege, match="tenant"):
            enqueue(app, "t-order", [{}])
        app.rollback()
        with tenant_transaction(app, TENANT_A):
            with pytest.raises(errors.InvalidParameterValue, match="priority 10 is out of range"):
                enqueue(app, "t-order", [{}], priority=10)  # ahead of tenant_min_priority (50)
        for statement in (
            "INSERT INTO app.jobs (tenant_id, queue_name, priority, payload, max_attempts) "
            "VALUES (app_private.current_tenant_id(), 't-order', 0, '{}', 1)",
            "UPDATE app.jobs SET priority = 0",
            "DELETE FROM app.dead_letters",
            "UPDATE platform.job_queues SET max_attempts = 100",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                with tenant_transaction(app, TENANT_A):
                    app.execute(statement)
        with tenant_transaction(app, TENANT_A):
            mine = enqueue(app, "t-order", [{"secret": "a"}])[0]
        with tenant_transaction(app, TENANT_B):
            theirs = enqueue(app, "t-order", [{"secret": "b"}])[0]
            assert app.execute("SELECT state FROM app.job_status(%s)", [theirs]).fetchone()[0] == "pending"
            assert app.execute("SELECT state FROM app.job_status(%s)", [mine]).fetchone()[0] is None
            assert app.execute("SELECT count(*) FROM app.jobs WHERE id = %s", [mine]).fetchone()[0] == 0
    with qdb.connect() as conn:
        conn.execute("DELETE FROM app.jobs WHERE queue_name = 't-order'")


def test_the_worker_role_reads_no_table_and_tenants_cannot_run_worker_functions(qdb):
    with psycopg.connect(_url(qdb, "worker"), autocommit=True) as worker:
        for table in ("app.jobs", "app.dead_letters", "platform.job_queues", "app.finished_jobs"):
            with pytest.raises(errors.InsufficientPrivilege):
                worker.execute(f"SELECT 1 FROM {table} LIMIT 1")  # noqa: S608 - constants
        with pytest.raises(errors.InsufficientPrivilege):
            worker.execute("SELECT app.enqueue_jobs('t-order', ARRAY['{}'::jsonb])")
    for kind in ("app", "readonly"):
        with psycopg.connect(_url(qdb, kind), autocommit=True) as tenant:
            for call in (
                "SELECT * FROM worker.fetch(ARRAY[1::bigint])",
                "SELECT worker.complete('{1}', '{0}')",
            ):
                with pytest.raises(errors.InsufficientPrivilege):
                    tenant.execute(call)


# ------------------------------------------------------------------------------------------ semantics


def test_a_worker_for_a_queue_that_does_not_exist_fails_at_start(qdb, shared_redis, ns):
    _, url = shared_redis
    worker = QueueWorker(_url(qdb, "worker"), url, ns, ["t-order", "no-such-queue"], lambda j: None)
    with pytest.raises(ValueError, match="queues: no-such-queue do not exist or are inactive"):
        worker.start()
    assert worker._threads == []


def _mover(db: TierDb, url: str, namespace: str) -> Mover:
    return Mover(WorkerStore(_url(db, "worker")), RedisSide(redis_client(url), namespace), sweep_seconds=0.5)


def test_jobs_run_best_priority_first_across_tenants(qdb, shared_redis, ns):
    _, url = shared_redis
    low = _enqueue(qdb, TENANT_A, "t-order", [{"p": 900}], priority=900)
    normal = _enqueue(qdb, TENANT_B, "t-order", [{"p": 100}, {"p": 100}])
    high = _enqueue(qdb, TENANT_B, "t-order", [{"p": 50}], priority=50)
    _mover(qdb, url, ns).tick()
    order: list[int] = []
    worker = QueueWorker(_url(qdb, "worker"), url, ns, ["t-order"], lambda j: order.append(j.id), batch=1)
    store, side = WorkerStore(_url(qdb, "worker")), RedisSide(redis_client(url), ns)
    while worker.run_once(store, side):
        pass
    assert order == [*high, *normal, *low]
    assert _finished(qdb, "t-order") >= set(order)


def test_failures_back_off_then_dead_letter_and_replay_with_fresh_attempts(qdb, shared_redis, ns):
    _, url = shared_redis
    [job] = _enqueue(qdb, TENANT_A, "t-retry", [{"fail": True}])
    attempts_seen: list[int] = []
    healthy = threading.Event()

    def handle(j) -> None:
        attempts_seen.append(j.attempts)
        if not healthy.is_set():
            raise RuntimeError("smtp 451 try later")

    worker = QueueWorker(_url(qdb, "worker"), url, ns, ["t-retry"], handle, wait_seconds=0.1)
    worker.start()
    store = WorkerStore(_url(qdb, "worker"))
    try:
        _wait(lambda: store.dead_letters("t-retry", None, 10), what="the dead letter")
        assert attempts_seen == [0, 1, 2]
        [dead] = store.dead_letters("t-retry", TENANT_A, 10)
        assert dead[0] == job and dead[3] == 3 and "smtp 451" in dead[4]
        with qdb.connect() as conn:
            logged = conn.execute(
                "SELECT attempt, outcome FROM app.job_failures WHERE job_id = %s ORDER BY attempt", [job]
            ).fetchall()
            gaps = conn.execute(
                "SELECT extract(epoch FROM failed_at - lag(failed_at) OVER (ORDER BY attempt)) "
                "FROM app.job_failures WHERE job_id = %s ORDER BY attempt",
                [job],
            ).fetchall()
        assert logged == [(1, "retry"), (2, "retry"), (3, "dead")]
        assert gaps[1][0] >= 0.05 and gaps[2][0] >= 0.1  # 50 ms, then 100 ms of backoff
        assert ops.replay(store, queue="t-retry", tenant=TENANT_B) == 0  # another tenant's filter: nothing
        healthy.set()
        assert ops.replay(store, queue="t-retry", tenant=TENANT_A) == 1
        _wait(lambda: job in _finished(qdb, "t-retry"), what="the replayed job")
        assert attempts_seen[-1] == 0  # a fresh attempt count
        assert store.dead_letters("t-retry", None, 10) == []
    finally:
        worker.stop()


def test_stats_show_depth_per_queue_and_priority_and_purge_empties_dead_letters(qdb, shared_redis, ns):
    _, url = shared_redis
    _enqueue(qdb, TENANT_A, "t-order", [{}, {}], priority=300)
    _enqueue(qdb, TENANT_B, "t-order", [{}], priority=700)
    store, side = WorkerStore(_url(qdb, "worker")), RedisSide(redis_client(url), ns)
    _mover(qdb, url, ns).tick()
    side.claim("t-order", 1, int(time.time() * 1000) + 60_000, "held")
    found = ops.stats(store, side)
    depth = {(d.queue, d.priority): d for d in found.depths}
    assert depth[("t-order", 300)].ready == 2 and depth[("t-order", 700)].ready == 1
    assert depth[("t-order", 300)].oldest_ready_age_s >= 0
    assert found.in_flight["t-order"] == 1 and found.ready_in_redis["t-order"] == 2
    with qdb.connect() as conn:
        conn.execute(
            "WITH d AS (DELETE FROM app.jobs WHERE queue_name = 't-order' RETURNING *) "
            "INSERT INTO app.dead_letters (tenant_id, id, queue_name, priority, payload, attempts, max_attempts, "
            "enqueued_at) SELECT tenant_id, id, queue_name, priority, payload, 3, 3, enqueued_at FROM d"
        )
    progress: list[int] = []
    assert ops.purge(store, queue="t-order", tenant=TENANT_A, batch=1, progress=progress.append) == 2
    assert progress == [1, 2]
    assert [d.dead for d in ops.stats(store, None).depths if d.queue == "t-order"] == [1]
    assert ops.purge(store, queue="t-order") == 1


# ----------------------------------------------------------------------------------------------- faults


def _workers(db, url, namespace, queue, handler, count=4, batch=25):
    started = [
        QueueWorker(
            _url(db, "worker"),
            url,
            namespace,
            [queue],
            handler,
            batch=batch,
            mover=True,
            wait_seconds=0.2,
            name=f"w{i}",
        )
        for i in range(count)
    ]
    for worker in started:
        worker.start()
    return started


def _run_and_fault(db, url, namespace, queue, total, fault) -> Counter:
    """``total`` jobs through 4 workers; ``fault()`` once a third is done. Returns runs per job id."""
    ids = []
    per = total // 4
    for index, tenant in enumerate([TENANT_A, TENANT_B, uuid.UUID(int=3), uuid.UUID(int=4)]):
        ids += _enqueue(db, tenant, queue, [{"n": index * per + i} for i in range(per)])
    runs: Counter = Counter()
    lock = threading.Lock()

    def handle(job) -> None:
        with lock:
            runs[job.id] += 1

    workers = _workers(db, url, namespace, queue, handle)
    try:
        _wait(lambda: len(_finished(db, queue)) >= total // 3, what="a third of the jobs")
        fault()
        _wait(lambda: _finished(db, queue) >= set(ids), timeout=120, what="every job to finish")
    finally:
        for worker in workers:
            worker.stop()
    assert set(runs) == set(ids), "a job was never run"
    with db.connect() as conn:
        left = conn.execute(
            "SELECT (SELECT count(*) FROM app.jobs WHERE queue_name = %s) + "
            "(SELECT count(*) FROM app.scheduled_jobs WHERE queue_name = %s) + "
            "(SELECT count(*) FROM app.dead_letters WHERE queue_name = %s)",
            [queue, queue, queue],
        ).fetchone()[0]
    assert left == 0
    return runs


def test_redis_flushed_mid_run_loses_no_job(qdb, shared_redis, ns):
    admin, url = shared_redis

    def flush() -> None:
        keys = list(admin.scan_iter(match=f"{ns}*"))
        assert keys
        admin.delete(*keys)  # everything the queue had in Redis, cursor and leases included

    runs = _run_and_fault(qdb, url, ns, "t-load", 4000, flush)
    # Only jobs in flight at the flush (their leases were lost) may run twice.
    assert sum(n - 1 for n in runs.values()) <= 4 * 25 * 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of its own (AOF, everysec), so the test can kill it; returns (admin, queue url, restart)."""
    port, password = _free_port(), secrets.token_urlsafe(12)
    conf = tmp_path / "redis.conf"
    conf.write_text(
        f"bind 127.0.0.1\nport {port}\ndir {tmp_path}\nappendonly yes\nappendfsync everysec\n"
        f'maxmemory-policy noeviction\nrequirepass {password}\nsave ""\n'
    )
    procs: list[subprocess.Popen] = []

    def start() -> None:
        procs.append(subprocess.Popen([shutil.which("redis-server"), str(conf)], stdout=subprocess.DEVNULL))
        admin = redis.Redis(port=port, password=password)
        _wait(lambda: _pings(admin), timeout=10, what="redis-server")

    start()
    admin = redis.Redis(port=port, password=password)
    url = _queue_user(admin, "127.0.0.1", port)
    user, secret = url.split("//")[1].split("@")[0].split(":")
    # ACL users are not in the AOF: the restart re-creates the user from the config file.
    conf.write_text(
        conf.read_text() + f"user {user} reset " + " ".join(user_rules(f">{secret}", ["queue:"])) + "\n"
    )

    def kill_and_restart() -> None:
        procs[-1].send_signal(signal.SIGKILL)
        procs[-1].wait()
        time.sleep(1.0)  # workers see refused connections for a while
        start()

    yield admin, url, kill_and_restart
    for proc in procs:
        proc.kill()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_redis_killed_and_restarted_mid_run_loses_no_job(qdb, private_redis):
    _admin, url, kill_and_restart = private_redis
    runs = _run_and_fault(qdb, url, "queue:{itest-kill}:", "t-load", 4000, kill_and_restart)
    assert sum(n - 1 for n in runs.values()) <= 4 * 25 * 4


def _doomed_worker(worker_url, redis_url, namespace, claimed) -> None:
    def handle(job) -> None:
        claimed.value = 1
        time.sleep(3600)  # holds its leases until killed

    QueueWorker(worker_url, redis_url, namespace, ["t-lease"], handle, batch=5, mover=False).run(
        threading.Event()
    )


def test_a_worker_killed_holding_leases_has_its_jobs_run_again_after_the_lease(qdb, shared_redis, ns):
    _, url = shared_redis
    ids = _enqueue(qdb, TENANT_A, "t-lease", [{"n": i} for i in range(5)])
    _mover(qdb, url, ns).tick()
    claimed = mp.get_context("fork").Value("i", 0)
    doomed = mp.get_context("fork").Process(
        target=_doomed_worker, args=(_url(qdb, "worker"), url, ns, claimed)
    )
    doomed.start()
    _wait(lambda: claimed.value == 1, what="the doomed worker's claim")
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.join()
    runs: Counter = Counter()
    started = time.monotonic()
    survivor = QueueWorker(
        _url(qdb, "worker"), url, ns, ["t-lease"], lambda j: runs.update([j.id]), wait_seconds=0.1
    )
    survivor.start()
    try:
        _wait(lambda: _finished(qdb, "t-lease") >= set(ids), what="the reclaimed jobs")
    finally:
        survivor.stop()
    assert time.monotonic() - started >= 1.0  # not before the 1.5 s lease ran out
    assert dict(runs) == {i: 1 for i in ids}
    with qdb.connect() as conn:
        errors_logged = conn.execute(
            "SELECT DISTINCT error FROM app.job_failures WHERE queue_name = 't-lease'"
        ).fetchall()
        attempts = {
            r[0] for r in conn.execute("SELECT attempts FROM app.finished_jobs WHERE queue_name = 't-lease'")
        }
    assert errors_logged == [("lease expired",)] and attempts == {1}


def test_a_slow_batch_keeps_its_leases_and_a_lost_lease_is_not_released_by_its_old_claim(
    qdb, shared_redis, ns
):
    _, url = shared_redis
    ids = _enqueue(qdb, TENANT_A, "t-slow", [{"n": i} for i in range(4)])
    mover = _mover(qdb, url, ns)
    mover.tick()
    reaped: list[int] = []

    def handle(job) -> None:
        time.sleep(0.6)  # four jobs: 2.4 s, past the 1.5 s lease the batch was claimed with
        reaped.append(mover.reap())  # the reaper runs meanwhile and must find nothing expired

    worker = QueueWorker(_url(qdb, "worker"), url, ns, ["t-slow"], handle, batch=4, mover=False)
    store, side = WorkerStore(_url(qdb, "worker")), RedisSide(redis_client(url), ns)
    assert worker.run_once(store, side) == 4
    assert reaped == [0, 0, 0, 0] and worker.stats.lost == 0 and worker.stats.completed == 4
    with qdb.connect() as conn:
        attempts = {
            r[0] for r in conn.execute("SELECT attempts FROM app.finished_jobs WHERE queue_name = 't-slow'")
        }
    assert _finished(qdb, "t-slow") >= set(ids) and attempts == {0}
    # A claim whose lease ran out and was taken again cannot release or extend the new holder's lease.
    [job] = _enqueue(qdb, TENANT_A, "t-slow", [{"n": 9}])
    mover.tick()
    old = int(time.time() * 1000) + 1
    assert side.claim("t-slow", 1, old) == [job]
    newer = old + 60_000
    side.client.zadd(side.key("leases", "t-slow"), {job: newer})  # as if reaped, retried and claimed again
    assert side.release("t-slow", old, [job]) == [] and side.extend("t-slow", old, [job], newer + 1) == []
    assert side.client.zscore(side.key("leases", "t-slow"), job) == newer
    assert side.release("t-slow", newer, [job]) == [job]


@pytest.fixture
def private_postgres(devenv_env):
    """A PostgreSQL cluster of its own with the queue tier, so the test can restart it."""
    with private_cluster("itest-queue-pg-") as service:
        db = provision("queue")
        _add_queues(db)
        yield db, service
        teardown(db)


def test_postgres_restarted_mid_run_loses_no_job(private_postgres, shared_redis, ns):
    db, service = private_postgres
    _, url = shared_redis

    def restart() -> None:
        service.stop()
        time.sleep(0.5)
        service.start()

    runs = _run_and_fault(db, url, ns, "t-load", 4000, restart)
    assert sum(n - 1 for n in runs.values()) <= 4 * 25 * 4
