"""RedisUser's pure parts: the ACL rules it sends and how it recognises drift."""

from __future__ import annotations

import hashlib

import pytest

from modules.errors import ConfigError
from modules.redis.resources import RedisError, RedisUserProvider, acl_rules, live_matches
from tests.support.devenv_vars import DEVENV_VARS, stack_settings

PROPS = {
    "username": "q",
    "password": "pw-1",
    "key_prefixes": ["queue:", "job:"],
    "categories": ["read", "write"],
}


def test_acl_rules_reset_then_grant_only_prefixes_and_categories():
    rules = acl_rules(PROPS)
    assert rules[:2] == ["reset", "on"]
    assert ">pw-1" in rules
    assert "~queue:*" in rules and "~job:*" in rules
    assert rules.index("-@all") < rules.index("+@read")


def live_user(password="pw-1", keys="~queue:* ~job:*", commands="-@all +@read +@write", flags=("on",)):
    return {
        "flags": list(flags),
        "passwords": [hashlib.sha256(password.encode()).hexdigest()],
        "keys": keys,
        "commands": commands,
    }


def test_matching_user_shows_no_drift():
    assert all(live_matches(live_user(), PROPS).values())


def test_changed_password_keys_or_commands_are_each_seen():
    assert live_matches(live_user(password="other"), PROPS)["password"] is False
    assert live_matches(live_user(keys="~*"), PROPS)["key_prefixes"] is False
    assert live_matches(live_user(commands="+@all"), PROPS)["categories"] is False
    assert live_matches(live_user(flags=("off",)), PROPS)["enabled"] is False


def test_username_change_replaces_password_change_updates():
    provider = RedisUserProvider()
    assert provider.diff("q", PROPS, {**PROPS, "username": "r"}).replaces == ["username"]
    diff = provider.diff("q", PROPS, {**PROPS, "password": "pw-2"})
    assert diff.changes is True and diff.replaces == []
    assert provider.diff("q", PROPS, dict(PROPS)).changes is False


def test_check_rejects_empty_prefixes_and_bad_username():
    failures = RedisUserProvider().check({}, {**PROPS, "username": "a b", "key_prefixes": []}).failures
    assert {f.property for f in failures} == {"username", "key_prefixes"}


def test_rules_as_redis_reported_them_after_apply_are_the_reference():
    compacted = "-@all +@write +@read +@connection +object|help"
    props = {**PROPS, "acl_commands": compacted}
    assert live_matches(live_user(commands=compacted), props)["categories"] is True
    assert live_matches(live_user(commands="-@all +@read"), props)["categories"] is False


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
