"""The queue's ACL user on the dev Redis: what it may run, where, and how the resource sees drift.

Every test makes its own user through the resource's provider (``check`` then ``create``, the same rules
the stack sends) with a unique name, and deletes it and its keys afterwards; the dev stack's own user
(``penguinmails-queue``) is never touched. Before a forbidden command is sent as that user, ``ACL DRYRUN``
(admin) must already refuse it, so a wrong allow-list fails the test instead of flushing the dev server.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from devenv.redis import RedisService
from modules.config.model import RedisConfig
from modules.redis.resources import RedisUserProvider, _as_dict, user_props
from tests.support.devenv_vars import stack_settings
from tests.support.redis_acl import FORBIDDEN, assert_refused, fill

DEV_STACK_USER = "penguinmails-queue"
PREFIXES = RedisConfig().key_prefixes  # the prefixes the stack gives the queue user

# One call of every key command of the allow-list; ``{k}`` is a key of the prefix under test (or outside
# it). In this order each works on what the calls before it left.
KEY_COMMANDS = [
    ("SET", "{k}:s", "v", "NX", "PX", "60000"),
    ("GET", "{k}:s"),
    ("PEXPIRE", "{k}:s", "60000"),
    ("DEL", "{k}:s"),
    ("HSET", "{k}:h", "state", "waiting", "attempts", "1"),
    ("HMGET", "{k}:h", "state", "attempts"),
    ("LPUSH", "{k}:l", "a", "b", "z"),
    ("LTRIM", "{k}:l", "0", "63"),
    ("BLPOP", "{k}:l", "0.01"),
    ("ZADD", "{k}:z", "1", "a", "2", "b", "3", "c"),
    ("ZSCORE", "{k}:z", "a"),
    ("ZMSCORE", "{k}:z", "a", "b", "nope"),
    ("ZCARD", "{k}:z"),
    ("ZRANGEBYSCORE", "{k}:z", "-inf", "2"),
    ("ZPOPMIN", "{k}:z"),
    ("ZREM", "{k}:z", "c"),
    ("EVAL", "return redis.call('SET', KEYS[1], ARGV[1])", "1", "{k}:e", "v"),
]


@dataclass
class QueueUser:
    username: str
    password: str
    outs: dict[str, Any]
    token: str

    def key(self, prefix: str) -> str:
        return f"{prefix}acltest-{self.token}"

    @property
    def outside(self) -> str:
        return f"outside:acltest-{self.token}"

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(
            port=int(kwargs.pop("port")), username=self.username, password=self.password, **kwargs
        )


@pytest.fixture(scope="module")
def dev_redis() -> dict[str, str]:
    """The dev Redis (started if it is not; idempotent) and the variables that reach it."""
    service = RedisService()
    service.start()
    return service.env()


@pytest.fixture
def admin(dev_redis):
    client = redis.Redis(
        host=dev_redis["PENGUINMAILS_REDIS_HOST"],
        port=int(dev_redis["PENGUINMAILS_REDIS_PORT"]),
        password=dev_redis["PENGUINMAILS_REDIS_ADMIN_PASSWORD"],
        decode_responses=True,
    )
    yield client
    client.close()


@pytest.fixture
def provider(dev_redis, monkeypatch) -> RedisUserProvider:
    for key, value in dev_redis.items():
        monkeypatch.setenv(key, value)
    provider = RedisUserProvider()
    provider.settings = stack_settings("dev")
    return provider


def _cleanup(admin: redis.Redis, provider: RedisUserProvider, username: str, token: str) -> None:
    assert username != DEV_STACK_USER
    if admin.execute_command("ACL", "GETUSER", username):
        provider.delete(username, {})
    for key in admin.scan_iter(match=f"*acltest-{token}*"):
        admin.delete(key)


@pytest.fixture
def queue_user(admin, provider, dev_redis):
    """A user made by the resource itself, as the stack makes it."""
    token = secrets.token_hex(4)
    username = f"pm-acltest-{token}"
    password = secrets.token_urlsafe(24)
    checked = provider.check({}, user_props(username, password, PREFIXES))
    assert checked.failures == []
    try:
        outs = provider.create(checked.inputs).outs
        yield QueueUser(username, password, outs, token)
    finally:
        _cleanup(admin, provider, username, token)


@pytest.fixture
def worker(queue_user, dev_redis):
    client = queue_user.client(port=dev_redis["PENGUINMAILS_REDIS_PORT"], decode_responses=True)
    yield client
    client.close()


def _refused_by_dryrun(admin: redis.Redis, username: str, args: tuple[str, ...]) -> bool:
    """ACL DRYRUN answers OK, or the reason it would refuse, without running anything."""
    return admin.execute_command("ACL", "DRYRUN", username, *args) != "OK"


@pytest.mark.parametrize("command", FORBIDDEN, ids=lambda c: " ".join(c[:2]))
def test_forbidden_command_is_refused_with_noperm(command, queue_user, worker, admin):
    assert_refused(worker, admin, queue_user.username, fill(command, queue_user.key(PREFIXES[0])))


@pytest.mark.parametrize("prefix", PREFIXES)
def test_queue_commands_work_under_each_prefix(prefix, queue_user, worker):
    key = queue_user.key(prefix)
    for command in KEY_COMMANDS:
        worker.execute_command(*fill(command, key))  # a refusal raises NoPermissionError
    assert worker.get(f"{key}:e") == "v"
    assert worker.hmget(f"{key}:h", ["state", "attempts"]) == ["waiting", "1"]


@pytest.mark.parametrize("command", KEY_COMMANDS, ids=lambda c: c[0])
def test_queue_commands_are_refused_on_a_key_outside_the_prefixes(command, queue_user, worker):
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.execute_command(*fill(command, queue_user.outside))


def test_commands_the_queue_does_not_use_are_refused_even_on_its_keys(queue_user, worker):
    inside = queue_user.key(PREFIXES[0])
    for args in (
        ("LMOVE", inside, inside + ":b", "LEFT", "RIGHT"),
        ("HGETALL", inside),
        ("HGET", inside, "state"),  # the lease owners' hash is gone: a lease's deadline is its token
        ("HDEL", inside, "state"),
        ("EXPIRE", inside, "10"),
        ("MULTI",),
        ("CLIENT", "SETNAME", "x"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            worker.execute_command(*args)


def test_scripts_reach_only_the_prefixes_and_the_allowed_commands(queue_user, worker, admin):
    inside = queue_user.key(PREFIXES[0])
    # Declared or not, a key under the prefixes is reachable; any other key is not.
    assert worker.eval("return redis.call('SET', KEYS[1], 'v')", 1, inside) == "OK"
    assert worker.eval(f"return redis.call('GET', '{inside}')", 0) == "v"
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.eval("return 1", 1, queue_user.outside)
    with pytest.raises(redis.exceptions.ResponseError, match="can't access"):
        worker.eval(f"return redis.call('SET', '{queue_user.outside}', 'v')", 0)
    assert _refused_by_dryrun(admin, queue_user.username, ("FLUSHALL",))
    with pytest.raises(redis.exceptions.ResponseError, match="can't run this command"):
        worker.eval("return redis.call('FLUSHALL')", 0)
    assert not admin.exists(queue_user.outside)
    # SCRIPT LOAD + EVALSHA (redis-py's registered scripts).
    incr = worker.register_script("return redis.call('HSET', KEYS[1], 'n', '1')")
    assert incr(keys=[inside + ":h"]) == 1
    sha = worker.script_load("return redis.call('HMGET', KEYS[1], 'n')")
    assert worker.evalsha(sha, 1, inside + ":h") == ["1"]
    with worker.pipeline(transaction=False) as pipe:  # the operators' depth read
        pipe.zcard(inside + ":z")
        pipe.zcard(inside + ":leases")
        assert pipe.execute() == [0, 0]


@pytest.mark.parametrize("protocol", [2, 3])
def test_worker_connects_over_resp2_and_resp3(protocol, queue_user, dev_redis):
    client = queue_user.client(
        port=dev_redis["PENGUINMAILS_REDIS_PORT"], protocol=protocol, decode_responses=True
    )
    try:
        assert client.ping() is True  # AUTH (RESP2) or HELLO 3 AUTH
    finally:
        client.close()


def test_wrong_password_is_refused(queue_user, dev_redis):
    client = redis.Redis(
        port=int(dev_redis["PENGUINMAILS_REDIS_PORT"]), username=queue_user.username, password="wrong"
    )
    with pytest.raises(redis.exceptions.AuthenticationError):
        client.ping()


def test_refresh_right_after_create_sees_no_drift(queue_user, provider):
    read = provider.read(queue_user.username, queue_user.outs)
    assert read.id == queue_user.username
    assert read.outs == queue_user.outs
    granted = queue_user.outs["acl_commands"].split()
    assert granted[0] == "-@all" and "+@transaction" not in granted and "+multi" not in granted


TAMPERING = {
    "password": (["resetpass", ">tampered-password"], "password"),
    "extra-command": (["+flushall"], "commands"),
    "category": (["+@keyspace"], "commands"),
    "all-keys": (["~*"], "key_prefixes"),
    "channels": (["&*"], "commands"),
    "selector": (["(~* +@all)"], "commands"),
    "disabled": (["off"], "commands"),
}


@pytest.mark.parametrize("rules, marked", TAMPERING.values(), ids=TAMPERING.keys())
def test_out_of_band_change_is_seen_and_the_update_restores_the_user(
    rules, marked, queue_user, provider, admin, worker
):
    admin.execute_command("ACL", "SETUSER", queue_user.username, *rules)
    read = provider.read(queue_user.username, queue_user.outs)
    assert read.outs[marked] != queue_user.outs[marked]
    news = provider.check({}, user_props(queue_user.username, queue_user.password, PREFIXES)).inputs
    diff = provider.diff(queue_user.username, read.outs, news)
    assert diff.changes is True and diff.replaces == []

    outs = provider.update(queue_user.username, read.outs, news).outs
    assert outs == queue_user.outs
    assert provider.read(queue_user.username, outs).outs == outs
    assert _refused_by_dryrun(admin, queue_user.username, ("FLUSHALL",))
    assert _refused_by_dryrun(admin, queue_user.username, ("GET", queue_user.outside))
    assert _refused_by_dryrun(admin, queue_user.username, ("SUBSCRIBE", "anything"))
    assert worker.ping() is True


def test_state_of_the_category_version_is_updated_in_place(admin, provider, dev_redis):
    """A user made by the earlier rules (-@all +@<category>) and its state: no drift, update, not replace."""
    token = secrets.token_hex(4)
    username = f"pm-acltest-{token}"
    password = secrets.token_urlsafe(24)
    categories = ["read", "write", "list", "hash", "string", "keyspace", "connection"]
    legacy_rules = ["reset", "on", f">{password}", "resetchannels", *(f"~{p}*" for p in PREFIXES)]
    legacy_rules += ["-@all", *(f"+@{c}" for c in categories)]
    try:
        admin.execute_command("ACL", "SETUSER", username, *legacy_rules)
        reported = _as_dict(admin.execute_command("ACL", "GETUSER", username))["commands"]
        legacy_outs = {
            "username": username,
            "password": password,
            "key_prefixes": list(PREFIXES),
            "categories": categories,
            "acl_commands": reported,
        }
        assert not _refused_by_dryrun(admin, username, ("FLUSHALL",))  # the defect, as it was

        assert provider.read(username, legacy_outs).outs == legacy_outs  # refresh: nothing drifted
        news = provider.check({}, {k: v for k, v in legacy_outs.items() if k != "acl_commands"}).inputs
        assert news == user_props(username, password, PREFIXES)
        diff = provider.diff(username, legacy_outs, news)
        assert diff.changes is True and diff.replaces == []

        outs = provider.update(username, legacy_outs, news).outs
        assert "categories" not in outs
        assert provider.read(username, outs).outs == outs
        for args in (("FLUSHALL",), ("KEYS", "*"), ("SCAN", "0"), ("CLIENT", "KILL", "ID", "1")):
            assert _refused_by_dryrun(admin, username, args)
        port = int(dev_redis["PENGUINMAILS_REDIS_PORT"])
        with redis.Redis(port=port, username=username, password=password) as worker:  # same password
            assert worker.set(f"{PREFIXES[0]}acltest-{token}", "1") is True
    finally:
        _cleanup(admin, provider, username, token)


def test_dev_redis_runs_loopback_only_protected_append_only_without_eviction(admin):
    config = admin.config_get("*")
    assert config["maxmemory-policy"] == "noeviction"
    assert config["appendonly"] == "yes"
    assert config["protected-mode"] == "yes"
    addresses = config["bind"].split()
    assert addresses
    assert all(ipaddress.ip_address(a.lstrip("-")).is_loopback for a in addresses), addresses
