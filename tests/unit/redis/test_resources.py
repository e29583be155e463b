"""RedisUser's pure parts: the ACL rules it sends and how it recognises drift."""

from __future__ import annotations

import hashlib

from modules.redis.resources import RedisUserProvider, acl_rules, live_matches

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
