"""Redis ACL test data shared by the devenv ACL tests and the Redis VPS role tests."""

from __future__ import annotations

import pytest
import redis

# Refused whatever their arguments; the arguments chosen are harmless should one get through anyway.
# ``{k}`` is a key under the user's first prefix (a refused key is not why these fail).
FORBIDDEN = [
    ("FLUSHALL",),
    ("FLUSHALL", "ASYNC"),
    ("FLUSHDB",),
    ("SWAPDB", "0", "0"),
    ("KEYS", "*"),
    ("KEYS", "{k}*"),
    ("SCAN", "0"),
    ("SCAN", "0", "MATCH", "{k}*"),
    ("CONFIG", "GET", "maxmemory-policy"),
    ("CONFIG", "SET", "maxmemory-policy", "noeviction"),
    ("CLIENT", "KILL", "ID", "999999999"),
    ("CLIENT", "LIST"),
    ("CLIENT", "PAUSE", "1"),
    ("DEBUG", "SLEEP", "0"),
    ("SHUTDOWN", "ABORT"),
    ("MIGRATE", "127.0.0.1", "1", "{k}", "0", "1000"),
    ("MODULE", "LIST"),
    ("ACL", "WHOAMI"),
    ("ACL", "LIST"),
    ("SELECT", "1"),
    ("INFO",),
    ("DBSIZE",),
    ("RANDOMKEY",),
    ("RENAME", "{k}", "{k}:renamed"),
    ("OBJECT", "ENCODING", "{k}"),
    ("DUMP", "{k}"),
    ("SCRIPT", "FLUSH"),
    ("SCRIPT", "KILL"),
    ("FUNCTION", "LIST"),
    ("FCALL", "nothing", "0"),
    ("SUBSCRIBE", "{k}"),
    ("PSUBSCRIBE", "*"),
    ("PUBLISH", "{k}", "x"),
    ("BGSAVE",),
    ("REPLICAOF", "NO", "ONE"),
    ("MONITOR",),
]


def fill(args: tuple[str, ...], key: str) -> tuple[str, ...]:
    """``args`` with ``{k}`` replaced by ``key``."""
    return tuple(a.replace("{k}", key) for a in args)


def assert_refused(worker: redis.Redis, admin: redis.Redis, username: str, args: tuple[str, ...]) -> None:
    """The ACL refuses ``args`` (ACL DRYRUN, which runs nothing), and so does the server when ``worker`` tries."""
    assert admin.execute_command("ACL", "DRYRUN", username, *args) != "OK", f"the ACL would allow {args}"
    if args[0] == "DEBUG":
        # Refused before the ACL is consulted (enable-debug-command is off); DRYRUN shows the ACL's answer.
        with pytest.raises(redis.exceptions.ResponseError, match="DEBUG command not allowed"):
            worker.execute_command(*args)
        return
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.execute_command(*args)
