"""The queue's PostgreSQL half, as the worker role sees it: only the ``worker.*`` functions.

Each call is one statement on an autocommit connection, so every claim, completion or failure of a batch is
one round trip and one commit. Connections are opened lazily and reopened after a server restart.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb, set_json_loads

from modules.queue.redis_side import Cursor

_COMPLETE = "SELECT worker.complete(%s::bigint[], %s::integer[])"
_FAIL = "SELECT id, outcome FROM worker.fail(%s, %s, %s, %s)"
_FETCH = "SELECT * FROM worker.fetch(%s::bigint[])"
_RECENT = "SELECT * FROM worker.recent(%s, %s)"


def int_array(values: Sequence[int]) -> str:
    """An array literal for a hot-path parameter: psycopg's list dumper costs ~8 µs per element."""
    return "{" + ",".join(map(str, values)) + "}"


@dataclass(frozen=True)
class Job:
    """One delivery of a job. ``attempts`` (failed attempts so far) is the claim's generation."""

    id: int
    tenant_id: uuid.UUID
    queue: str
    priority: int
    payload: Any
    attempts: int
    max_attempts: int
    enqueued_at: datetime


@dataclass(frozen=True)
class QueueInfo:
    name: str
    lease_ms: int
    default_priority: int


@dataclass(frozen=True)
class Promotable:
    ids: list[int]
    queues: list[str]
    priorities: list[int]
    enqueued_ms: list[int]
    next: Cursor


class WorkerStore:
    """A reconnecting connection as the worker role (URL from the stack's ``queue_worker_url`` output)."""

    def __init__(self, url: str, application_name: str = "penguinmails-queue"):
        self.url = url
        self.application_name = application_name
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(
                self.url, autocommit=True, application_name=self.application_name, connect_timeout=5
            )
            set_json_loads(orjson.loads, self._conn)
        return self._conn

    def _call(self, query: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            conn = self.connection()
            try:
                return conn.execute(query, params, prepare=True).fetchall()
            except psycopg.OperationalError:
                # A restarted server: the next call reconnects; this one reports the failure.
                conn.close()
                raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    # -- the mover

    def promotable(
        self, after: Cursor, limit: int, recent_after: int | None = None
    ) -> tuple[Promotable, list[tuple[int, str, int, int]]]:
        """Rows past the cursor below the horizon, and (when ``recent_after`` is given, in the same round
        trip) committed rows above it with ids past ``recent_after``."""
        with self._lock:
            conn = self.connection()
            try:
                with conn.pipeline():
                    cur = conn.cursor().execute(
                        "SELECT ids, queues, priorities, enqueued_ms, next_xid::text, next_id "
                        "FROM worker.promotable(%s::xid8, %s, %s)",
                        [after.xid, after.id, limit],
                        prepare=True,
                    )
                    early = (
                        conn.cursor().execute(_RECENT, [recent_after, limit], prepare=True)
                        if recent_after is not None
                        else None
                    )
                row = cur.fetchone()
                rows = early.fetchall() if early is not None else []
            except psycopg.OperationalError:
                conn.close()
                raise
        batch = Promotable(
            list(row[0]), list(row[1]), list(row[2]), list(row[3]), Cursor(row[4], int(row[5]))
        )
        return batch, [(int(r[0]), r[1], int(r[2]), int(r[3])) for r in rows]

    def promote_due(self, limit: int) -> tuple[int, datetime | None]:
        moved, next_due = self._call("SELECT moved, next_due FROM worker.promote_due(%s)", [limit])[0]
        return int(moved), next_due

    def recent(self, after_id: int, limit: int) -> list[tuple[int, str, int, int]]:
        return [(int(r[0]), r[1], int(r[2]), int(r[3])) for r in self._call(_RECENT, [after_id, limit])]

    def pending(self, after_id: int, limit: int) -> list[tuple[int, str, int, int]]:
        return [
            (int(r[0]), r[1], int(r[2]), int(r[3]))
            for r in self._call("SELECT * FROM worker.pending(%s, %s)", [after_id, limit])
        ]

    def queues(self) -> list[QueueInfo]:
        return [QueueInfo(r[0], int(r[1]), int(r[2])) for r in self._call("SELECT * FROM worker.queues()")]

    # -- the workers

    def finish_and_fetch(
        self, done: Sequence[Job], failed: Sequence[tuple[Job, str]], worker: str, next_ids: Sequence[int]
    ) -> tuple[set[int], dict[int, str], list[Job]]:
        """Record the last batch and read the next one's payloads in one round trip (one transaction)."""
        with self._lock:
            conn = self.connection()
            try:
                with conn.pipeline():
                    cur_done = cur_failed = cur_next = None
                    if done:
                        cur_done = conn.cursor().execute(
                            _COMPLETE,
                            [int_array([j.id for j in done]), int_array([j.attempts for j in done])],
                            prepare=True,
                        )
                    if failed:
                        cur_failed = conn.cursor().execute(
                            _FAIL,
                            [
                                [j.id for j, _ in failed],
                                [j.attempts for j, _ in failed],
                                [e for _, e in failed],
                                worker,
                            ],
                            prepare=True,
                        )
                    if next_ids:
                        cur_next = conn.cursor().execute(_FETCH, [int_array(next_ids)], prepare=True)
                finished = set(cur_done.fetchone()[0]) if cur_done else set()
                outcomes = {int(r[0]): r[1] for r in cur_failed.fetchall()} if cur_failed else {}
                rows = cur_next.fetchall() if cur_next else []
            except psycopg.OperationalError:
                conn.close()
                raise
        by_id = {row[0]: Job(*row) for row in rows}
        return finished, outcomes, [by_id[i] for i in next_ids if i in by_id]

    def fail(
        self, ids: Sequence[int], attempts: Sequence[int] | None, errors: Sequence[str], worker: str
    ) -> dict[int, str]:
        if not ids:
            return {}
        rows = self._call(
            _FAIL,
            [list(ids), None if attempts is None else list(attempts), list(errors), worker],
        )
        return {int(r[0]): r[1] for r in rows}

    # -- operators

    def stats(self) -> list[tuple]:
        return self._call("SELECT * FROM worker.stats()")

    def dead_letters(self, queue: str | None, tenant: uuid.UUID | None, limit: int) -> list[tuple]:
        return self._call("SELECT * FROM worker.dead_letters(%s, %s, %s)", [queue, tenant, limit])

    def replay(
        self, queue: str | None, tenant: uuid.UUID | None, ids: Sequence[int] | None, limit: int
    ) -> list[int]:
        rows = self._call(
            "SELECT worker.replay_dead_letters(%s, %s, %s, %s)",
            [queue, tenant, None if ids is None else list(ids), limit],
        )
        return list(rows[0][0])

    def purge(
        self, queue: str | None, tenant: uuid.UUID | None, ids: Sequence[int] | None, limit: int
    ) -> int:
        rows = self._call(
            "SELECT worker.purge_dead_letters(%s, %s, %s, %s)",
            [queue, tenant, None if ids is None else list(ids), limit],
        )
        return int(rows[0][0])


def enqueue(
    conn: psycopg.Connection,
    queue: str,
    payloads: Sequence[Any],
    priority: int | None = None,
    run_at: datetime | None = None,
    max_attempts: int | None = None,
) -> list[int]:
    """Enqueue for the tenant of the current transaction (the app role; see ``tenant_transaction``)."""
    row = conn.execute(
        "SELECT app.enqueue_jobs(%s, %s::jsonb[], %s, %s, %s)",
        [queue, [Jsonb(p) for p in payloads], priority, run_at, max_attempts],
    ).fetchone()
    return list(row[0])
