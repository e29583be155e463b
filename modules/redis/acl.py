"""The queue user's ACL rules, in one place: for ``ACL SETUSER`` (:class:`RedisUser`) and for the ACL file
the ``redis`` Ansible role writes on a Redis VPS (:class:`modules.ansible.redis_host.RedisHost`).

Pure functions, no client: both callers build the same rules from the same allow-list,
:data:`QUEUE_COMMANDS`, so a command granted or withdrawn here changes both at once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

# Exactly what the queue (modules/queue) runs, itself or inside its Lua scripts; nothing else. No category
# is granted: @keyspace, @write, @read, @connection and the like also carry FLUSHALL/FLUSHDB/SWAPDB,
# KEYS/SCAN and CLIENT KILL. Every command here that names keys is checked by Redis against the user's
# ``~<prefix>*`` patterns, and so is every key a script touches with redis.call, so none of them reaches a
# key outside the prefixes. Subcommands are granted one by one (``script|load``, not ``script``).
QUEUE_COMMANDS = (
    # The mover lock (SET PX, GET, PEXPIRE, DEL; in a script).
    "get",
    "set",
    "pexpire",
    "del",
    # The mover's cursor (a hash).
    "hset",
    "hmget",
    # Wake-up signals: the mover pushes (and trims), idle workers wait in BLPOP instead of polling.
    "lpush",
    "ltrim",
    "blpop",
    # Ready jobs by priority and leases by deadline (sorted sets).
    "zadd",
    "zrem",
    "zscore",
    "zmscore",
    "zpopmin",
    "zrangebyscore",
    "zcard",
    # The scripts: they run with this user's rights (only these commands, only these keys). SCRIPT LOAD and
    # EXISTS touch only the script cache (redis-py loads a script when EVALSHA says it is not cached); no
    # SCRIPT FLUSH/KILL, no FUNCTION.
    "eval",
    "evalsha",
    "script|load",
    "script|exists",
    # Connection: the login (AUTH, HELLO) and health checks. Not CLIENT LIST/INFO/KILL/PAUSE, not SELECT.
    "ping",
    "auth",
    "hello",
)

ADMIN_USER = "default"
# What Redis accepts as a user name in an ACL file line (one token, no spaces or control characters).
_USERNAME_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def password_sha256(password: str) -> str:
    """The hex SHA-256 Redis keeps and reports for a password (``#<hash>`` in ACL rules)."""
    return hashlib.sha256(password.encode()).hexdigest()


def command_rules(commands: Iterable[str] | None = None) -> list[str]:
    """Nothing, then each allowed command: ``-@all +get +set ...``."""
    return ["-@all"] + [f"+{command}" for command in (commands or QUEUE_COMMANDS)]


def user_rules(
    password_rule: str, key_prefixes: Iterable[str], commands: Iterable[str] | None = None
) -> list[str]:
    """The queue user's rules after ``reset``: enabled, one password, no channel, its prefixes, its commands.

    ``password_rule`` is ``>cleartext`` (sent over an admin connection) or ``#<sha256>`` (written to a file).
    """
    rules = ["on", password_rule, "resetchannels"]
    rules += [f"~{prefix}*" for prefix in key_prefixes]
    return rules + command_rules(commands)


def queue_user_rules(
    username: str, password_hash: str, key_prefixes: Iterable[str], commands: Iterable[str] | None = None
) -> list[str]:
    """The rules of an ACL file line for the queue user, the password as its SHA-256 only."""
    problems = rule_problems(username, password_hash, list(key_prefixes))
    if problems:
        raise ValueError(f"queue user {username!r}: " + "; ".join(problems))
    return user_rules(f"#{password_hash}", key_prefixes, commands)


def admin_rules(password_hash: str) -> list[str]:
    """The admin (``default``) user: everything, with a password."""
    if not _SHA256_RE.match(password_hash or ""):
        raise ValueError("admin password: must be given as a lower-case hex SHA-256")
    return ["on", f"#{password_hash}", "~*", "&*", "+@all"]


def acl_line(username: str, rules: Iterable[str]) -> str:
    """One line of a Redis ACL file (``aclfile``)."""
    return " ".join(["user", username, *rules])


def rule_problems(username: str, password_hash: str, key_prefixes: list[str]) -> list[str]:
    reasons = []
    if not isinstance(username, str) or not _USERNAME_RE.match(username) or username == ADMIN_USER:
        reasons.append("username must be one token of letters, digits, '_.:@-' and not 'default'")
    if not isinstance(password_hash, str) or not _SHA256_RE.match(password_hash):
        reasons.append("the password must be given as a lower-case hex SHA-256")
    if not key_prefixes:
        reasons.append("at least one key prefix is needed")
    for prefix in key_prefixes:
        if not isinstance(prefix, str) or not prefix or any(c.isspace() or c in "*?[" for c in prefix):
            reasons.append(f"key prefix {prefix!r} must be non-empty, without spaces or glob characters")
    return reasons
