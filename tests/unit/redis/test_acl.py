"""The shared ACL rules: RedisUser's SETUSER rules and the redis role's ACL file line grant the same."""

from __future__ import annotations

import hashlib

import pytest

from modules.redis import acl
from modules.redis.resources import acl_rules, user_props

PREFIXES = ["queue:", "job:"]
HASH = hashlib.sha256(b"pw-1").hexdigest()


def test_file_rules_and_setuser_rules_differ_only_in_how_the_password_is_given():
    file_rules = acl.queue_user_rules("q", HASH, PREFIXES)
    setuser_rules = acl_rules(user_props("q", "pw-1", PREFIXES))
    assert setuser_rules[0] == "reset"
    assert setuser_rules[1:] == [">pw-1" if rule == f"#{HASH}" else rule for rule in file_rules]


def test_file_rules_hold_the_hash_never_the_password():
    rules = acl.queue_user_rules("q", acl.password_sha256("pw-1"), PREFIXES)
    assert f"#{HASH}" in rules
    assert not [r for r in rules if r.startswith(">") or "pw-1" in r]
    assert rules[:3] == ["on", f"#{HASH}", "resetchannels"]


def test_file_rules_grant_exactly_the_queue_commands_on_the_prefixes():
    rules = acl.queue_user_rules("q", HASH, PREFIXES)
    assert [r for r in rules if r.startswith("~")] == ["~queue:*", "~job:*"]
    assert rules[rules.index("-@all") + 1 :] == [f"+{c}" for c in acl.QUEUE_COMMANDS]
    assert not [r for r in rules if r.startswith(("+@", "&", "allkeys", "allcommands", "nopass", "("))]


def test_acl_line_is_one_file_line():
    line = acl.acl_line("q", acl.queue_user_rules("q", HASH, PREFIXES))
    assert line.startswith(f"user q on #{HASH} resetchannels ~queue:* ~job:* -@all +get ")
    assert "\n" not in line
    assert acl.acl_line("default", acl.admin_rules(HASH)) == f"user default on #{HASH} ~* &* +@all"


@pytest.mark.parametrize(
    ("username", "password_hash", "prefixes", "words"),
    [
        ("default", HASH, PREFIXES, "not 'default'"),
        ("two words", HASH, PREFIXES, "one token"),
        ("q", "pw-1", PREFIXES, "SHA-256"),
        ("q", HASH.upper(), PREFIXES, "SHA-256"),
        ("q", HASH, [], "at least one key prefix"),
        ("q", HASH, ["queue:*"], "glob"),
        ("q", HASH, ["a b"], "without spaces"),
    ],
)
def test_bad_input_is_refused_naming_the_reason(username, password_hash, prefixes, words):
    with pytest.raises(ValueError, match=words):
        acl.queue_user_rules(username, password_hash, prefixes)


def test_admin_rules_need_a_hash():
    with pytest.raises(ValueError, match="SHA-256"):
        acl.admin_rules("cleartext-password")
