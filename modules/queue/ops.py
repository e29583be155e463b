"""Operator views and actions: depth per queue and priority, dead letters list/replay/purge.

They run as the worker role (the stack's ``queue_worker_url``) and the queue's Redis user, never as a
tenant. Replay and purge go in batches so a long one shows progress and can be stopped between batches.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from modules.queue.redis_side import RedisSide
from modules.queue.store import WorkerStore


@dataclass(frozen=True)
class QueueDepth:
    queue: str
    priority: int
    ready: int
    scheduled: int
    dead: int
    oldest_ready_age_s: float | None


@dataclass(frozen=True)
class QueueStats:
    depths: list[QueueDepth]
    in_flight: dict[str, int]  # leases held in Redis, per queue
    ready_in_redis: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "depths": [asdict(d) for d in self.depths],
            "in_flight": self.in_flight,
            "ready_in_redis": self.ready_in_redis,
        }


def stats(store: WorkerStore, side: RedisSide | None) -> QueueStats:
    now = datetime.now(UTC)
    depths = [
        QueueDepth(
            queue=q,
            priority=p,
            ready=int(ready),
            scheduled=int(scheduled),
            dead=int(dead),
            oldest_ready_age_s=None if oldest is None else round((now - oldest).total_seconds(), 3),
        )
        for q, p, ready, oldest, scheduled, dead in store.stats()
    ]
    in_flight: dict[str, int] = {}
    in_redis: dict[str, int] = {}
    if side is not None:
        for info in store.queues():
            ready, leased = side.depth(info.name)
            in_redis[info.name], in_flight[info.name] = ready, leased
    return QueueStats(depths, in_flight, in_redis)


def _batches(
    action: Callable[[int], int], limit: int | None, batch: int, progress: Callable[[int], None] | None
) -> int:
    total = 0
    while limit is None or total < limit:
        size = batch if limit is None else min(batch, limit - total)
        moved = action(size)
        total += moved
        if progress is not None and moved:
            progress(total)
        if moved < size:
            break
    return total


def replay(store: WorkerStore, **filters) -> int:
    """Re-enqueue dead letters (fresh attempt count); the mover promotes them like new jobs."""
    return _dead_letters(lambda q, t, ids, n: len(store.replay(q, t, ids, n)), **filters)


def purge(store: WorkerStore, **filters) -> int:
    """Delete dead letters for good."""
    return _dead_letters(store.purge, **filters)


def _dead_letters(
    action: Callable[[str | None, uuid.UUID | None, list[int] | None, int], int],
    queue: str | None = None,
    tenant: uuid.UUID | None = None,
    ids: list[int] | None = None,
    limit: int | None = None,
    batch: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """``action`` on dead letters matching the filters, ``batch`` at a time (up to ``limit``)."""
    return _batches(lambda n: action(queue, tenant, ids, n), limit, batch, progress)
