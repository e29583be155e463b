"""The queue's Redis half: ready jobs by priority, leases, the mover's cursor, wake-up signals.

Redis holds job *ids* only (payloads stay in PostgreSQL), under one namespace such as ``queue:{pm_dev}:``
(the braces keep every key of a stack in one cluster slot). Per queue ``q``:

* ``ready:q``   sorted set, id → priority · 10¹² + enqueue time in ms since 2025 (best priority, then FIFO);
* ``leases:q``  sorted set, id → lease deadline (ms), which is also the claim's token (see ``_CLAIM``);
* ``signal:q``  short list the mover pushes to, so idle workers wait in BLPOP instead of polling.

And ``cursor`` (hash: xid, id), how far the mover has promoted PostgreSQL's rows; ``mover`` a lock so one
mover runs at a time. Every step that touches more than one key is one Lua script, so a claim can never
leave a job in neither ``ready`` nor ``leases``. Everything here can be lost: the mover rebuilds it from
PostgreSQL (a missing cursor restarts promotion from zero; a missing lease means the job is delivered again).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z: enqueue times are ms since then inside a score
PRIORITY_WEIGHT = 10**12  # ~31 years of milliseconds; priority ≤ 1000 keeps the score exact in a double
SIGNALS_KEPT = 64

_PROMOTE = """
local prefix = ARGV[1]
local cur = redis.call('HMGET', prefix .. 'cursor', 'xid', 'id')
if (cur[1] or '0') ~= ARGV[2] or (cur[2] or '0') ~= ARGV[3] then return -1 end
local added, touched = 0, {}
for i = 7, 6 + 3 * tonumber(ARGV[6]), 3 do
  local q, id = ARGV[i], ARGV[i + 1]
  if not redis.call('ZSCORE', prefix .. 'leases:' .. q, id) then
    added = added + redis.call('ZADD', prefix .. 'ready:' .. q, 'NX', ARGV[i + 2], id)
    touched[q] = true
  end
end
redis.call('HSET', prefix .. 'cursor', 'xid', ARGV[4], 'id', ARGV[5])
for q, _ in pairs(touched) do
  redis.call('LPUSH', prefix .. 'signal:' .. q, '1')
  redis.call('LTRIM', prefix .. 'signal:' .. q, 0, SIGNALS_LAST)
end
return added
""".replace("SIGNALS_LAST", str(SIGNALS_KEPT - 1))

# ARGV: prefix, n, then n x (queue, id, score): ids not ready and not leased go back to ready (the sweep).
_RESTORE = """
local prefix, added, touched = ARGV[1], 0, {}
for i = 3, 2 + 3 * tonumber(ARGV[2]), 3 do
  local q, id = ARGV[i], ARGV[i + 1]
  if not redis.call('ZSCORE', prefix .. 'leases:' .. q, id)
     and not redis.call('ZSCORE', prefix .. 'ready:' .. q, id) then
    added = added + redis.call('ZADD', prefix .. 'ready:' .. q, ARGV[i + 2], id)
    touched[q] = true
  end
end
for q, _ in pairs(touched) do redis.call('LPUSH', prefix .. 'signal:' .. q, '1') end
return added
"""

# A lease's token is its deadline: ``leases:q`` id → deadline (ms). A later claim of the same job comes after
# this lease ran out or was lost, so it carries another deadline, and "the score is still the deadline I was
# given" shows the lease is still this claim's with no second key to keep in step. (Two claims landing on the
# same millisecond, say across skewed clocks, would at worst let one release the other's lease early: the
# job then waits for the sweep; PostgreSQL's generation check still decides which completion counts.)

# ARGV: prefix, queue, n, deadline_ms, then optionally the deadline and ids of an earlier claim of this queue
# to release first (finished in PostgreSQL) → the claimed ids, best first.
_CLAIM = """
local prefix, q = ARGV[1], ARGV[2]
local leases_key = prefix .. 'leases:' .. q
if #ARGV > 5 then
  local ids, token, mine = {}, tonumber(ARGV[5]), {}
  for i = 6, #ARGV do ids[#ids + 1] = ARGV[i] end
  local scores = redis.call('ZMSCORE', leases_key, unpack(ids))
  for i = 1, #ids do
    if scores[i] and tonumber(scores[i]) == token then mine[#mine + 1] = ids[i] end
  end
  if #mine > 0 then redis.call('ZREM', leases_key, unpack(mine)) end
end
local popped = redis.call('ZPOPMIN', prefix .. 'ready:' .. q, tonumber(ARGV[3]))
if #popped == 0 then return {} end
local ids, leases = {}, {}
for i = 1, #popped, 2 do
  ids[#ids + 1] = popped[i]
  leases[#leases + 1] = ARGV[4]; leases[#leases + 1] = popped[i]
end
redis.call('ZADD', leases_key, unpack(leases))
return ids
"""

# ARGV: prefix, queue, token (the lease's deadline), new deadline_ms or '' (release), ids… → the ids this
# token held (released, or extended to the new deadline, which becomes their token).
_LEASES = """
local leases_key, token = ARGV[1] .. 'leases:' .. ARGV[2], tonumber(ARGV[3])
local ids, mine = {}, {}
for i = 5, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then return {} end
local scores = redis.call('ZMSCORE', leases_key, unpack(ids))
for i = 1, #ids do
  if scores[i] and tonumber(scores[i]) == token then mine[#mine + 1] = ids[i] end
end
if #mine == 0 then return {} end
if ARGV[4] == '' then
  redis.call('ZREM', leases_key, unpack(mine))
else
  local args = {}
  for _, id in ipairs(mine) do args[#args + 1] = ARGV[4]; args[#args + 1] = id end
  redis.call('ZADD', leases_key, 'XX', unpack(args))
end
return mine
"""

# ARGV: prefix, queue, now_ms, n → ids whose lease ran out, taken out of leases (the reaper).
_EXPIRED = """
local leases_key = ARGV[1] .. 'leases:' .. ARGV[2]
local ids = redis.call('ZRANGEBYSCORE', leases_key, '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
if #ids > 0 then redis.call('ZREM', leases_key, unpack(ids)) end
return ids
"""

# ARGV: prefix, owner, ttl_ms → 1 when this owner holds (or now took) the mover lock; ttl 0 lets it go.
_LOCK = """
local key = ARGV[1] .. 'mover'
local holder = redis.call('GET', key)
if ARGV[3] == '0' then
  if holder == ARGV[2] then redis.call('DEL', key) end
  return 0
end
if holder == ARGV[2] then redis.call('PEXPIRE', key, ARGV[3]) return 1 end
if holder then return 0 end
redis.call('SET', key, ARGV[2], 'PX', ARGV[3])
return 1
"""


def score(priority: int, enqueued_ms: int) -> int:
    return priority * PRIORITY_WEIGHT + max(0, enqueued_ms - EPOCH_MS)


@dataclass(frozen=True)
class Cursor:
    xid: str = "0"
    id: int = 0


class RedisSide:
    """The scripts above, bound to one client and namespace."""

    def __init__(self, client: redis.Redis, namespace: str):
        self.client = client
        self.prefix = namespace
        self._promote = client.register_script(_PROMOTE)
        self._restore = client.register_script(_RESTORE)
        self._claim = client.register_script(_CLAIM)
        self._leases = client.register_script(_LEASES)
        self._expired = client.register_script(_EXPIRED)
        self._lock = client.register_script(_LOCK)

    def key(self, kind: str, queue: str | None = None) -> str:
        return f"{self.prefix}{kind}" if queue is None else f"{self.prefix}{kind}:{queue}"

    # -- the mover's side

    def cursor(self) -> Cursor:
        xid, id_ = self.client.hmget(self.key("cursor"), ["xid", "id"])
        if xid is None:
            return Cursor()
        return Cursor(xid.decode(), int(id_ or 0))

    def promote(self, old: Cursor, new: Cursor, jobs: Sequence[tuple[str, int, int]]) -> int:
        """Add ``(queue, id, score)`` to ready (unless leased) and move the cursor; -1 if it moved meanwhile."""
        flat: list[str | int] = []
        for queue, job_id, job_score in jobs:
            flat += [queue, job_id, job_score]
        argv = [self.prefix, old.xid, old.id, new.xid, new.id, len(jobs), *flat]
        return int(self._promote(args=argv))

    def restore(self, jobs: Sequence[tuple[str, int, int]]) -> int:
        flat: list[str | int] = []
        for queue, job_id, job_score in jobs:
            flat += [queue, job_id, job_score]
        return int(self._restore(args=[self.prefix, len(jobs), *flat])) if jobs else 0

    def expired(self, queue: str, now_ms: int, limit: int = 500) -> list[int]:
        return [int(i) for i in self._expired(args=[self.prefix, queue, now_ms, limit])]

    def hold_mover_lock(self, owner: str, ttl_ms: int) -> bool:
        return bool(self._lock(args=[self.prefix, owner, ttl_ms]))

    def drop_mover_lock(self, owner: str) -> None:
        self._lock(args=[self.prefix, owner, 0])

    # -- the workers' side

    def claim(
        self,
        queue: str,
        limit: int,
        deadline_ms: int,
        release: tuple[int, Sequence[int]] | None = None,
    ) -> list[int]:
        """Claim up to ``limit`` ids until ``deadline_ms`` (their lease token); ``release`` = (token, ids) of
        an earlier claim of this queue that is finished in PostgreSQL, let go first in the same script."""
        extra: list[int] = [release[0], *release[1]] if release and release[1] else []
        return [int(i) for i in self._claim(args=[self.prefix, queue, limit, deadline_ms, *extra])]

    def release(self, queue: str, token: int, ids: Iterable[int]) -> list[int]:
        """Let go of the ids this claim still holds; the ids it held."""
        ids = list(ids)
        return [int(i) for i in self._leases(args=[self.prefix, queue, token, "", *ids])] if ids else []

    def extend(self, queue: str, token: int, ids: Iterable[int], deadline_ms: int) -> list[int]:
        """Push the leases this claim still holds to ``deadline_ms`` (their new token); the ids extended."""
        ids = list(ids)
        if not ids:
            return []
        return [int(i) for i in self._leases(args=[self.prefix, queue, token, deadline_ms, *ids])]

    def wait(self, queues: Sequence[str], timeout_s: float) -> bool:
        """Block until the mover signals one of ``queues`` (True) or the timeout passes (False)."""
        return self.client.blpop([self.key("signal", q) for q in queues], timeout=timeout_s) is not None

    # -- operators

    def depth(self, queue: str) -> tuple[int, int]:
        """(ready in Redis, in flight) for one queue."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(self.key("ready", queue))
        pipe.zcard(self.key("leases", queue))
        ready, leased = pipe.execute()
        return int(ready), int(leased)
