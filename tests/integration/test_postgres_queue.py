"""The PostgreSQL job queue on a real server: priority, backoff, dead letters, leases, concurrent workers."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import psycopg
import pytest

from modules.postgres.client import tenant_transaction
from tests.support.postgres import TierDb, provision, teardown

pytestmark = pytest.mark.services

TENANTS = [uuid.UUID(int=i) for i in (0x1, 0x2, 0x3)]


@pytest.fixture(scope="module")
def queue_db(devenv_env) -> TierDb:
    db = provision("queue")
    try:
        with db.connect("migrator") as conn:
            conn.execute(
                "INSERT INTO platform.job_queues (name, max_attempts, retry_base, retry_cap, "
                "lock_duration) VALUES "
                "('itest-order', 3, '1 second', '1 minute', '1 minute'), "
                "('itest-backoff', 5, '200 milliseconds', '700 milliseconds', '1 minute'), "
                "('itest-dead', 2, '10 milliseconds', '10 milliseconds', '1 minute'), "
                "('itest-lease', 2, '10 milliseconds', '10 milliseconds', '300 milliseconds'), "
                "('itest-load', 3, '1 second', '1 minute', '1 minute')"
            )
        yield db
    finally:
        teardown(db)


def enqueue(
    conn: psycopg.Connection, tenant: uuid.UUID, queue: str, priority: int | None = None, **payload
) -> uuid.UUID:
    with tenant_transaction(conn, tenant):
        return conn.execute(
            "SELECT app.enqueue_job(%s, %s::jsonb, %s)", [queue, psycopg.types.json.Jsonb(payload), priority]
        ).fetchone()[0]


def dequeue(conn: psycopg.Connection, queue: str, worker: str, limit: int = 1) -> list[tuple]:
    with conn.transaction():
        return conn.execute(
            "SELECT tenant_id, id, priority, attempts, payload FROM app.dequeue_jobs(%s, %s, %s)",
            [queue, worker, limit],
        ).fetchall()


def test_enqueue_needs_a_tenant(queue_db):
    with queue_db.connect("app") as app:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="tenant"):
            app.execute("SELECT app.enqueue_job('itest-order')")


def test_jobs_run_best_priority_first_across_tenants(queue_db):
    with queue_db.connect("app") as app:
        for tenant, priority in zip(TENANTS, (200, 10, 100), strict=True):
            enqueue(app, tenant, "itest-order", priority, tag=priority)
        order = [dequeue(app, "itest-order", "w1")[0] for _ in range(3)]
        assert [row[2] for row in order] == [10, 100, 200]
        assert [row[0] for row in order] == [TENANTS[1], TENANTS[2], TENANTS[0]]
        assert dequeue(app, "itest-order", "w1") == []
        for tenant, job, *_ in order:
            assert app.execute("SELECT app.complete_job(%s, %s, 'w1')", [tenant, job]).fetchone()[0] is True


def test_failed_attempts_back_off_exponentially_up_to_the_cap(queue_db):
    with queue_db.connect("app") as app, queue_db.connect() as admin:
        job = enqueue(app, TENANTS[0], "itest-backoff")
        delays = []
        for _attempt in range(4):
            deadline = time.monotonic() + 5
            claimed = []
            while not claimed and time.monotonic() < deadline:
                claimed = dequeue(app, "itest-backoff", "w1")
                time.sleep(0.02)
            assert claimed and claimed[0][1] == job
            outcome = app.execute(
                "SELECT app.fail_job(%s, %s, 'w1', 'smtp 451')", [TENANTS[0], job]
            ).fetchone()[0]
            assert outcome == "retry"
            delay = admin.execute(
                "SELECT extract(epoch FROM run_at - updated_at) FROM app.jobs WHERE id = %s", [job]
            ).fetchone()[0]
            delays.append(round(float(delay), 3))
            # Not runnable before the backoff has passed.
            assert dequeue(app, "itest-backoff", "w1") == []
        assert delays == [0.2, 0.4, 0.7, 0.7]
        logs = admin.execute(
            "SELECT status, attempt_number FROM app.job_logs WHERE job_id = %s ORDER BY attempt_number", [job]
        ).fetchall()
        assert logs == [("retry", 1), ("retry", 2), ("retry", 3), ("retry", 4)]


def test_job_is_dead_lettered_after_max_attempts_and_can_be_replayed(queue_db):
    tenant = TENANTS[1]
    with queue_db.connect("app") as app:
        job = enqueue(app, tenant, "itest-dead", kind="webhook")
        outcomes = []
        for _ in range(2):
            deadline = time.monotonic() + 5
            claimed = []
            while not claimed and time.monotonic() < deadline:
                claimed = dequeue(app, "itest-dead", "w1")
                time.sleep(0.02)
            assert claimed
            outcomes.append(
                app.execute("SELECT app.fail_job(%s, %s, 'w1', 'boom')", [tenant, job]).fetchone()[0]
            )
        assert outcomes == ["retry", "dead"]
        time.sleep(0.05)
        assert dequeue(app, "itest-dead", "w1") == []
        with tenant_transaction(app, tenant):
            dead = app.execute(
                "SELECT attempts, max_attempts, last_error, payload FROM app.dead_letters WHERE id = %s",
                [job],
            ).fetchone()
            assert dead == (2, 2, "boom", {"kind": "webhook"})
            assert app.execute("SELECT count(*) FROM app.jobs WHERE id = %s", [job]).fetchone()[0] == 0
        # Another tenant cannot replay it; its own tenant can, with fresh attempts.
        with tenant_transaction(app, TENANTS[0]):
            assert app.execute("SELECT app.replay_dead_letter(%s)", [job]).fetchone()[0] is False
        with tenant_transaction(app, tenant):
            assert app.execute("SELECT app.replay_dead_letter(%s)", [job]).fetchone()[0] is True
        claimed = dequeue(app, "itest-dead", "w1")
        assert [(row[1], row[3]) for row in claimed] == [(job, 1)]
        assert app.execute("SELECT app.complete_job(%s, %s, 'w1')", [tenant, job]).fetchone()[0] is True


def test_a_dead_workers_job_is_reclaimed_after_its_lease(queue_db):
    tenant = TENANTS[2]
    with queue_db.connect("app") as app:
        job = enqueue(app, tenant, "itest-lease")
        assert dequeue(app, "itest-lease", "dead-worker")[0][1] == job
        assert dequeue(app, "itest-lease", "w2") == []  # leased
        time.sleep(0.35)
        # The expired lease counts as a failed attempt: back in the queue after the backoff.
        deadline = time.monotonic() + 5
        claimed = []
        while not claimed and time.monotonic() < deadline:
            claimed = dequeue(app, "itest-lease", "w2")
            time.sleep(0.02)
        assert [(row[1], row[3]) for row in claimed] == [(job, 2)]
        # The first worker comes back too late: it no longer holds the job.
        assert (
            app.execute("SELECT app.complete_job(%s, %s, 'dead-worker')", [tenant, job]).fetchone()[0]
            is False
        )
        assert (
            app.execute("SELECT app.fail_job(%s, %s, 'dead-worker', 'x')", [tenant, job]).fetchone()[0]
            == "lost"
        )
        assert app.execute("SELECT app.complete_job(%s, %s, 'w2')", [tenant, job]).fetchone()[0] is True


def test_four_concurrent_workers_never_run_a_job_twice(queue_db):
    total = 600
    with queue_db.connect("app") as app:
        for index in range(total):
            tenant = TENANTS[index % len(TENANTS)]
            with tenant_transaction(app, tenant):
                app.execute(
                    "SELECT app.enqueue_job('itest-load', %s::jsonb, %s)", [f'{{"n": {index}}}', index % 7]
                )
    claimed: list[tuple[str, uuid.UUID]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            with queue_db.connect("app") as conn:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    batch = dequeue(conn, "itest-load", name, 5)
                    if not batch:
                        return
                    for tenant, job, *_ in batch:
                        done = conn.execute(
                            "SELECT app.complete_job(%s, %s, %s)", [tenant, job, name]
                        ).fetchone()[0]
                        assert done is True
                        with lock:
                            claimed.append((name, job))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not errors, errors
    jobs = Counter(job for _, job in claimed)
    assert len(jobs) == total and max(jobs.values()) == 1
    per_worker = Counter(name for name, _ in claimed)
    assert len(per_worker) == 4, f"every worker should have taken some jobs: {per_worker}"
    with queue_db.connect() as admin:
        assert (
            admin.execute(
                "SELECT count(*) FROM app.jobs WHERE queue_name = 'itest-load' AND status = "
                "'completed' AND attempts = 1"
            ).fetchone()[0]
            == total
        )
        assert (
            admin.execute(
                "SELECT count(*) FROM app.job_logs l JOIN app.jobs j ON j.tenant_id = l.tenant_id "
                "AND j.id = l.job_id "
                "WHERE j.queue_name = 'itest-load'"
            ).fetchone()[0]
            == total
        )


def test_enqueue_wakes_listening_workers(queue_db):
    with queue_db.connect("app") as listener, queue_db.connect("app") as producer:
        listener.execute("LISTEN penguinmails_jobs")
        enqueue(producer, TENANTS[0], "itest-order", 5)
        notes = list(listener.notifies(timeout=5, stop_after=1))
        assert [n.payload for n in notes] == ["itest-order"]
        job = dequeue(producer, "itest-order", "w9")[0]
        producer.execute("SELECT app.complete_job(%s, %s, 'w9')", [job[0], job[1]])
