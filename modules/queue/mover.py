"""The mover: PostgreSQL → Redis promotion, due scheduled jobs, the lease reaper and the sweep.

One mover runs at a time per namespace (a Redis lock renewed every tick); every worker process may start
one, so a fleet of workers keeps its queue moving with no extra daemon. Each tick:

1. *promote*: rows of ``app.jobs`` past the cursor whose transaction has ended go into ``ready`` (never over
   a live lease), and the cursor moves in the same script. A missing cursor (Redis flushed or restarted
   empty) starts again from zero: every unfinished job is promoted again, so nothing is lost;
2. *due*: scheduled jobs (delayed enqueues, retries) whose time came move into ``app.jobs`` (then 1.);
3. *reap*: leases that ran out count as a failed attempt (retry after the backoff, or dead letter);
4. *sweep* (every ``sweep_seconds``): unfinished jobs below the cursor that Redis has neither ready nor
   leased (a crash between two halves of a step) are put back in ready.

It sleeps on PostgreSQL's LISTEN (enqueues notify ``penguinmails_queue``) until the next scheduled job is
due, at most ``idle_seconds``.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
import redis

from modules.queue.redis_side import Cursor, RedisSide, score
from modules.queue.store import WorkerStore

log = logging.getLogger("penguinmails.queue.mover")
CHANNEL = "penguinmails_queue"


@dataclass
class MoverStats:
    promoted: int = 0
    due: int = 0
    reaped: int = 0
    restored: int = 0
    rebuilds: int = 0
    errors: int = 0
    last_error: str = ""
    outcomes: dict[str, int] = field(default_factory=dict)


class Mover:
    def __init__(
        self,
        store: WorkerStore,
        side: RedisSide,
        batch: int = 2000,
        idle_seconds: float = 0.5,
        sweep_seconds: float = 30.0,
        chores_seconds: float = 0.25,
        lock_ttl_ms: int = 5000,
        name: str | None = None,
    ):
        self.store, self.side = store, side
        self.batch, self.idle_seconds, self.sweep_seconds = batch, idle_seconds, sweep_seconds
        self.chores_seconds = chores_seconds
        self._next_chores = 0.0
        self.lock_ttl_ms = lock_ttl_ms
        self.name = name or f"mover:{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.stats = MoverStats()
        self._queues: list[str] = []
        self._queues_at = 0.0
        self._next_sweep = 0.0
        self._sweep_after = 0
        self._next_due: datetime | None = None
        self._listener: psycopg.Connection | None = None

    # -- steps (each usable on its own, e.g. from tests)

    def queues(self) -> list[str]:
        if not self._queues or time.monotonic() - self._queues_at > 10:
            self._queues = [q.name for q in self.store.queues()]
            self._queues_at = time.monotonic()
        return self._queues

    def _read_cursor(self) -> Cursor:
        cursor = self.side.cursor()
        if cursor == Cursor() and self._last_cursor != Cursor():
            self.stats.rebuilds += 1
            log.warning("queue cursor missing in Redis: promoting every unfinished job again")
        return cursor

    def promote(self) -> int:
        """Promote everything committed past the cursor; the number of ids added to ready.

        The cursor is kept between calls and checked by the promote script itself (compare and set), so a
        flushed Redis or a second mover shows as a refused promote and the cursor is read again."""
        added, recent = 0, None
        while True:
            cursor = self._cursor if self._cursor is not None else self._read_cursor()
            batch, rows = self.store.promotable(
                cursor, self.batch, None if recent is not None else self._early_after
            )
            recent = rows if recent is None else recent
            jobs = [
                (queue, job_id, score(priority, ms))
                for job_id, queue, priority, ms in zip(
                    batch.ids, batch.queues, batch.priorities, batch.enqueued_ms, strict=True
                )
            ]
            done = self.side.promote(cursor, batch.next, jobs)
            if done < 0:
                self._cursor = None  # another mover (or a flush) moved the cursor: read it again
                continue
            added += done
            self._cursor = self._last_cursor = batch.next
            if len(jobs) < self.batch:
                break
        # Committed above the horizon (read in the same round trip): early, without the cursor.
        while recent:
            added += self.side.restore([(q, i, score(p, ms)) for i, q, p, ms in recent])
            self._early_after = recent[-1][0]
            recent = self.store.recent(self._early_after, self.batch) if len(recent) >= self.batch else []
        self._early_after = max(self._early_after, self._cursor.id)
        self.stats.promoted += added
        return added

    _cursor: Cursor | None = None
    _early_after = 0

    _last_cursor = Cursor()

    def promote_due(self) -> int:
        moved, self._next_due = self.store.promote_due(self.batch)
        total = moved
        while moved >= self.batch:
            moved, self._next_due = self.store.promote_due(self.batch)
            total += moved
        self.stats.due += total
        return total

    def reap(self, now_ms: int | None = None) -> int:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        reaped = 0
        for queue in self.queues():
            while True:
                ids = self.side.expired(queue, now_ms)
                if not ids:
                    break
                outcomes = self.store.fail(ids, None, ["lease expired"] * len(ids), self.name)
                for outcome in outcomes.values():
                    self.stats.outcomes[outcome] = self.stats.outcomes.get(outcome, 0) + 1
                reaped += len(ids)
        self.stats.reaped += reaped
        return reaped

    def sweep(self) -> int:
        """Put back what Redis lost track of (below the cursor, neither ready nor leased)."""
        restored, after = 0, 0
        while True:
            rows = self.store.pending(after, self.batch)
            if not rows:
                break
            restored += self.side.restore([(q, i, score(p, ms)) for i, q, p, ms in rows])
            after = rows[-1][0]
        self.stats.restored += restored
        return restored

    def tick(self) -> None:
        """Promote; every ``chores_seconds`` (or when a scheduled job is due) also move due jobs and reap.

        A wake-up by an enqueue thus costs one read and one script before workers see the job (the lock is
        renewed on its own clock, a fifth of its lifetime)."""
        self.promote()  # first: a wake-up by an enqueue does not wait for the chores
        now = time.monotonic()
        due = self._next_due is not None and self._next_due <= datetime.now(UTC)
        if now >= self._next_chores or due:
            if self.promote_due():
                self.promote()
            self.reap()
            self._next_chores = now + self.chores_seconds
        if time.monotonic() >= self._next_sweep:
            self.sweep()
            self._next_sweep = time.monotonic() + self.sweep_seconds

    # -- the loop

    def _listen(self) -> psycopg.Connection:
        if self._listener is None or self._listener.closed or self._listener.broken:
            self._listener = psycopg.connect(self.store.url, autocommit=True, connect_timeout=5)
            self._listener.execute(f"LISTEN {CHANNEL}")
        return self._listener

    def _sleep(self) -> None:
        timeout = min(self.idle_seconds, max(0.0, self._next_chores - time.monotonic()))
        if self._next_due is not None:
            timeout = min(timeout, max(0.0, (self._next_due - datetime.now(UTC)).total_seconds()))
        conn = self._listen()
        if select.select([conn.fileno()], [], [], timeout)[0]:
            for _ in conn.notifies(timeout=0, stop_after=1000):
                pass

    def run(self, stop: threading.Event) -> None:
        """Tick while holding the mover lock; back off and retry on Redis or PostgreSQL outages."""
        backoff = 0.1
        renewed = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() - renewed >= self.lock_ttl_ms / 5000:
                    if not self.side.hold_mover_lock(self.name, self.lock_ttl_ms):
                        renewed = 0.0
                        stop.wait(self.lock_ttl_ms / 5000)
                        continue
                    renewed = time.monotonic()
                self.tick()
                backoff = 0.1
                self._sleep()
            except (redis.RedisError, psycopg.Error, OSError) as exc:
                renewed = 0.0  # look at the lock again before the next tick
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("queue mover: %s (retrying in %.1f s)", self.stats.last_error, backoff)
                if self._listener is not None:
                    self._listener.close()
                stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
        try:
            self.side.drop_mover_lock(self.name)  # the next mover need not wait for the lock to expire
        except redis.RedisError:
            pass
