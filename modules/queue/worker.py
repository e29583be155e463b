"""The worker API a service uses: claim a batch from Redis, read payloads from PostgreSQL, run, finish.

    worker = QueueWorker(worker_url, redis_url, namespace, ["email-sending"], handle)
    worker.run(stop_event)        # or worker.start() / worker.stop() around a service's own loop

``handle(job)`` returning means success; raising means a failed attempt (retried after the queue's backoff,
dead-lettered after ``max_attempts``). Delivery is at least once: a job runs again when its lease ran out
(the worker died or took longer than the queue's ``lock_duration``) or Redis lost its lease. Per batch the
worker makes one claim (a Lua script), one read of the payloads, one completion and at most one failure
statement (each one commit), and one release: nothing is written per job that succeeds except its move to
``app.finished_jobs``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg
import redis

from modules.queue.mover import Mover
from modules.queue.redis_side import RedisSide
from modules.queue.store import Job, WorkerStore

log = logging.getLogger("penguinmails.queue.worker")
Handler = Callable[[Job], object]


@dataclass
class WorkerStats:
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    dead: int = 0
    lost: int = 0  # finished too late: the lease ran out and the job was retried or taken by another worker
    stale: int = 0  # claimed from Redis but no longer in PostgreSQL (already finished)
    errors: int = 0
    last_error: str = ""
    outcomes: dict[str, int] = field(default_factory=dict)


@dataclass
class _Batch:
    token: int  # the lease deadline (ms), which is the claim's token in Redis
    ids: list[int]
    done: list[Job] = field(default_factory=list)
    failed: list[tuple[Job, str]] = field(default_factory=list)


@dataclass
class _Pipeline:
    pending: dict[str, _Batch] = field(default_factory=dict)  # run, not yet recorded in PostgreSQL
    recorded: dict[str, tuple[int, list[int]]] = field(default_factory=dict)  # recorded, lease not released


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)


class QueueWorker:
    def __init__(
        self,
        worker_url: str,
        redis_url: str,
        namespace: str,
        queues: Sequence[str],
        handler: Handler,
        *,
        batch: int = 10,
        threads: int = 1,
        mover: bool = True,
        name: str | None = None,
        wait_seconds: float = 1.0,
    ):
        if not queues:
            raise ValueError("queues: name at least one queue to work on")
        if not 1 <= batch <= 1000:
            raise ValueError(f"batch: must be between 1 and 1000, got {batch}")
        self.worker_url, self.redis_url, self.namespace = worker_url, redis_url, namespace
        self.queues, self.handler, self.batch, self.threads = list(queues), handler, batch, threads
        self.with_mover, self.wait_seconds = mover, wait_seconds
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.stats = WorkerStats()
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.mover: Mover | None = None
        self._lease_ms: dict[str, int] = {}

    # -- one cycle

    def _lease(self, store: WorkerStore, queue: str) -> int:
        if queue not in self._lease_ms:
            known = {q.name: q.lease_ms for q in store.queues()}
            missing = [q for q in self.queues if q not in known]
            if missing:
                raise ValueError(f"queues: {', '.join(missing)} do not exist or are inactive")
            self._lease_ms.update(known)
        return self._lease_ms[queue]

    def _count(self, **deltas: int) -> None:
        with self._stats_lock:
            for key, value in deltas.items():
                setattr(self.stats, key, getattr(self.stats, key) + value)

    def run_once(self, store: WorkerStore, side: RedisSide, state: _Pipeline | None = None) -> int:
        """Claim, run and record at most one batch per queue; the number of jobs run.

        Pipelined, so a batch costs two round trips: the claim of batch *k* travels with the release of
        batch *k-2* (Redis), and the payload read of *k* with the completion of *k-1* (PostgreSQL), which
        always comes before its release. With no ``state`` every batch is recorded and released at once.
        """
        own = state is None
        state = state or _Pipeline()
        ran = 0
        for queue in self.queues:
            lease_ms = self._lease(store, queue)
            token = int(time.time() * 1000) + lease_ms
            ids = side.claim(queue, self.batch, token, release=state.recorded.pop(queue, None))
            previous = state.pending.pop(queue, None)
            jobs = self._record(store, previous, ids)
            if previous is not None:
                state.recorded[queue] = (previous.token, previous.ids)
            if not ids:
                continue
            self._count(claimed=len(ids), stale=len(ids) - len(jobs))
            batch = _Batch(token, ids)
            for job in jobs:
                self._keep_lease(side, queue, batch, lease_ms)
                try:
                    self.handler(job)
                except Exception as exc:  # the handler's failure is the job's failed attempt
                    batch.failed.append((job, f"{type(exc).__name__}: {exc}"[:4000]))
                else:
                    batch.done.append(job)
            state.pending[queue] = batch
            ran += len(jobs)
        if own or ran == 0:
            self.flush(store, side, state)
        return ran

    def _keep_lease(self, side: RedisSide, queue: str, batch: _Batch, lease_ms: int) -> None:
        """Before each job: once half the lease is gone, push it out by a whole lease (a slow batch)."""
        now = int(time.time() * 1000)
        if now < batch.token - lease_ms // 2:
            return
        held = side.extend(queue, batch.token, batch.ids, now + lease_ms)
        batch.token, batch.ids = now + lease_ms, held

    def flush(self, store: WorkerStore, side: RedisSide, state: _Pipeline) -> None:
        """Record every batch still pending and let go of every lease (before idling or stopping)."""
        for queue, batch in list(state.pending.items()):
            self._record(store, batch, [])
            del state.pending[queue]
            state.recorded[queue] = (batch.token, batch.ids)
        for queue, (token, ids) in list(state.recorded.items()):
            side.release(queue, token, ids)
            del state.recorded[queue]

    def _record(self, store: WorkerStore, batch: _Batch | None, next_ids: list[int]) -> list[Job]:
        """Complete/fail ``batch`` and fetch ``next_ids``; on a PostgreSQL outage retry a few times, then
        give up and let the leases run out (the reaper retries those jobs)."""
        done = batch.done if batch else []
        failed = batch.failed if batch else []
        if not done and not failed and not next_ids:
            return []
        for attempt in range(5):
            try:
                finished, outcomes, jobs = store.finish_and_fetch(done, failed, self.name, next_ids)
                break
            except psycopg.OperationalError:
                if attempt == 4:
                    raise
                time.sleep(0.2 * 2**attempt)
        lost = len(done) - len(finished) + len(failed) - len(outcomes)
        dead = sum(1 for o in outcomes.values() if o == "dead")
        self._count(completed=len(finished), failed=len(outcomes) - dead, dead=dead, lost=lost)
        return jobs

    # -- the loop

    def _loop(self, index: int) -> None:
        store = WorkerStore(self.worker_url, application_name=f"penguinmails-worker-{index}")
        side = RedisSide(redis_client(self.redis_url), self.namespace)
        backoff = 0.1
        state = _Pipeline()
        try:
            while not self._stop.is_set():
                try:
                    if self.run_once(store, side, state) == 0:
                        side.wait(self.queues, self.wait_seconds)
                    backoff = 0.1
                except (redis.RedisError, psycopg.Error, OSError) as exc:
                    with self._stats_lock:
                        self.stats.errors += 1
                        self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("queue worker %s: %s (retrying in %.1f s)", self.name, exc, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 2.0)
            try:
                self.flush(store, side, state)
            except (redis.RedisError, psycopg.Error, OSError) as exc:
                log.warning(
                    "queue worker %s: could not record its last batch (%s); its leases will expire",
                    self.name,
                    exc,
                )
        finally:
            store.close()

    def start(self) -> None:
        """Start the threads; a queue that does not exist fails here, not silently in a worker thread."""
        store = WorkerStore(self.worker_url, application_name="penguinmails-worker-check")
        try:
            for queue in self.queues:
                self._lease(store, queue)
        finally:
            store.close()
        self._stop.clear()
        if self.with_mover:
            self.mover = Mover(
                WorkerStore(self.worker_url, application_name="penguinmails-mover"),
                RedisSide(redis_client(self.redis_url), self.namespace),
                name=f"mover:{self.name}:{uuid.uuid4().hex[:6]}",
            )
            self._threads.append(threading.Thread(target=self.mover.run, args=(self._stop,), daemon=True))
        for index in range(self.threads):
            self._threads.append(threading.Thread(target=self._loop, args=(index,), daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set (a service's main thread)."""
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()
