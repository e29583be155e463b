"""RedisUser's pure parts: the ACL rules it sends and how it recognises drift."""

from __future__ import annotations

import hashlib

import pytest

from modules.errors import ConfigError
from modules.redis.resources import (
    QUEUE_COMMANDS,
    RedisError,
    RedisUserProvider,
    acl_rules,
    live_matches,
    user_props,
)
from tests.support.devenv_vars import DEVENV_VARS, stack_settings

PROPS = user_props("q", "pw-1", ["queue:", "job:"])
# What an earlier version kept in state: categories instead of commands, and what Redis reported for them.
LEGACY_PROPS = {
    "username": "q",
    "password": "pw-1",
    "key_prefixes": ["queue:", "job:"],
    "categories": ["read", "write", "list", "hash", "string", "keyspace", "connection"],
    "acl_commands": "-@all +@write +@read +@connection +object|help",
}
# Never to be granted to a queue worker (the defect these replace allowed all of them).
FORBIDDEN = {
    "flushall", "flushdb", "swapdb", "keys", "scan", "config", "client", "client|kill", "client|list",
    "debug", "shutdown", "migrate", "module", "acl", "select", "subscribe", "publish", "monitor",
    "script", "script|flush", "script|kill", "function", "fcall", "info", "randomkey", "rename",
}  # fmt: skip


def test_acl_rules_reset_then_grant_only_prefixes_and_queue_commands():
    rules = acl_rules(PROPS)
    assert rules[:2] == ["reset", "on"]
    assert ">pw-1" in rules and "resetchannels" in rules
    assert "~queue:*" in rules and "~job:*" in rules
    assert [r for r in rules if r.startswith("~")] == ["~queue:*", "~job:*"]  # no ~* and no %R~/%W~
    grants = [r for r in rules if r.startswith("+")]
    assert rules.index("-@all") < rules.index(grants[0])
    assert grants == [f"+{c}" for c in QUEUE_COMMANDS]
    assert not [r for r in rules if r.startswith(("+@", "&", "allkeys", "allcommands", "allchannels", "("))]


def test_categories_of_earlier_inputs_grant_nothing():
    assert acl_rules({**PROPS, "categories": ["keyspace", "dangerous"]}) == acl_rules(PROPS)
    assert acl_rules({k: v for k, v in LEGACY_PROPS.items() if k != "acl_commands"}) == acl_rules(PROPS)


def test_allow_list_holds_no_category_and_no_forbidden_command():
    assert len(set(QUEUE_COMMANDS)) == len(QUEUE_COMMANDS)
    assert all(c == c.lower() and "@" not in c and " " not in c for c in QUEUE_COMMANDS)
    assert not FORBIDDEN & set(QUEUE_COMMANDS)
    assert {c for c in QUEUE_COMMANDS if "|" in c} == {"script|load", "script|exists"}


def live_user(
    password="pw-1",
    keys="~queue:* ~job:*",
    commands=" ".join(["-@all", *(f"+{c}" for c in QUEUE_COMMANDS)]),
    flags=("on",),
    channels="",
    selectors=(),
):
    return {
        "flags": list(flags),
        "passwords": [hashlib.sha256(password.encode()).hexdigest()],
        "keys": keys,
        "commands": commands,
        "channels": channels,
        "selectors": list(selectors),
    }


def test_matching_user_shows_no_drift():
    assert all(live_matches(live_user(), PROPS).values())


def test_changed_password_keys_or_commands_are_each_seen():
    assert live_matches(live_user(password="other"), PROPS)["password"] is False
    assert live_matches(live_user(keys="~*"), PROPS)["key_prefixes"] is False
    assert live_matches(live_user(commands="+@all"), PROPS)["commands"] is False
    assert live_matches(live_user(flags=("off",)), PROPS)["enabled"] is False
    assert live_matches(live_user(channels="&*"), PROPS)["channels"] is False
    assert (
        live_matches(live_user(selectors=[{"commands": "+@all", "keys": "~*"}]), PROPS)["selectors"] is False
    )


def test_username_change_replaces_password_change_updates():
    provider = RedisUserProvider()
    assert provider.diff("q", PROPS, {**PROPS, "username": "r"}).replaces == ["username"]
    diff = provider.diff("q", PROPS, {**PROPS, "password": "pw-2"})
    assert diff.changes is True and diff.replaces == []
    assert provider.diff("q", PROPS, dict(PROPS)).changes is False
    assert provider.diff("q", {**PROPS, "acl_commands": "-@all +get"}, dict(PROPS)).changes is False


def test_check_rejects_empty_prefixes_and_bad_username():
    failures = RedisUserProvider().check({}, {**PROPS, "username": "a b", "key_prefixes": []}).failures
    assert {f.property for f in failures} == {"username", "key_prefixes"}


def test_check_refuses_a_command_outside_the_allow_list():
    failures = RedisUserProvider().check({}, {**PROPS, "commands": ["get", "flushall", "+@all"]}).failures
    assert [f.property for f in failures] == ["commands"]
    assert "flushall" in failures[0].reason and "+@all" in failures[0].reason
    assert RedisUserProvider().check({}, {**PROPS, "commands": []}).failures[0].property == "commands"


def test_inputs_of_an_earlier_program_check_into_the_allow_list():
    legacy_inputs = {k: v for k, v in LEGACY_PROPS.items() if k != "acl_commands"}
    checked = RedisUserProvider().check({}, legacy_inputs)
    assert checked.failures == []
    assert checked.inputs == PROPS


def test_state_with_categories_is_updated_in_place_not_replaced():
    diff = RedisUserProvider().diff("q", LEGACY_PROPS, PROPS)
    assert diff.changes is True and diff.replaces == []
    # Refresh of that state against the user it made finds nothing changed out of band.
    legacy_live = live_user(commands=LEGACY_PROPS["acl_commands"])
    assert all(live_matches(legacy_live, LEGACY_PROPS).values())


def test_rules_as_redis_reported_them_after_apply_are_the_reference():
    compacted = "-@all +@transaction +get +set"
    props = {**PROPS, "acl_commands": compacted}
    assert live_matches(live_user(commands=compacted), props)["commands"] is True
    assert live_matches(live_user(commands="-@all +get"), props)["commands"] is False


# The admin connection: the devenv's variables on a dev stack only.

PROD_REDIS = {"mode": "server", "host": "redis.example.net", "port": 6380, "tls": True}


@pytest.fixture
def env_sh(monkeypatch):
    for key, value in DEVENV_VARS.items():
        monkeypatch.setenv(key, value)


def admin_of(settings):
    provider = RedisUserProvider()
    provider.settings = settings
    client, password = provider._admin()
    where = client.connection_pool.connection_kwargs
    client.close()
    return where["host"], where["port"], password


def test_dev_stack_connects_with_the_devenv_variables(env_sh):
    settings = stack_settings("dev", redis={"port": 7000}, redisAdminPassword="config-pw")
    assert admin_of(settings) == ("127.0.0.1", 6390, "devenv-redis-pw")


def test_production_stack_ignores_the_devenv_and_uses_its_config(env_sh):
    settings = stack_settings("production", redis=PROD_REDIS, redisAdminPassword="config-pw")
    assert admin_of(settings) == ("redis.example.net", 6380, "config-pw")
    assert admin_of(stack_settings("production", redis=PROD_REDIS))[2] is None


def test_production_stack_takes_the_password_from_the_named_ci_variable(env_sh, monkeypatch):
    monkeypatch.setenv("CI_REDIS_ADMIN", "ci-pw")
    settings = stack_settings(
        "production", redis=PROD_REDIS, secretsFromEnv={"redisAdminPassword": "CI_REDIS_ADMIN"}
    )
    assert admin_of(settings) == ("redis.example.net", 6380, "ci-pw")


def test_production_stack_refuses_a_devenv_name_in_secrets_from_env(env_sh):
    named = {"redisAdminPassword": "PENGUINMAILS_REDIS_ADMIN_PASSWORD"}
    with pytest.raises(ConfigError, match=r"penguinmails:secretsFromEnv\.redisAdminPassword"):
        admin_of(stack_settings("production", redis=PROD_REDIS, secretsFromEnv=named))


def test_a_failure_names_the_server_it_tried():
    provider = RedisUserProvider()
    provider.settings = stack_settings("production", redis={"host": "127.0.0.1", "port": 1})
    with pytest.raises(RedisError, match=r"Redis 127\.0\.0\.1:1: ACL GETUSER failed"):
        provider._run("ACL GETUSER", lambda c: c.execute_command("ACL", "GETUSER", "x"))
