"""The Platform component under Pulumi mocks: what it declares and which outputs stay secret."""

from __future__ import annotations

import pulumi
import pytest


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(args)
        state = dict(args.inputs)
        if args.typ.endswith("secrets:GeneratedSecret"):
            state["result"] = f"generated-{args.name}"
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


@pytest.fixture
def mocks():
    recording = RecordingMocks()
    pulumi.runtime.set_mocks(recording, project="penguinmails", stack="unit", preview=False)
    return recording


@pulumi.runtime.test
def test_platform_declares_tier_passwords_and_a_limited_redis_user(mocks):
    from modules.config.loader import validate_config
    from modules.platform.component import TIER_ROLES, Platform

    config = validate_config({"redis": {"queue_user": "pm-queue", "key_prefixes": ["queue:"]}})
    platform = Platform("pm", config)

    def check(args):
        url, is_secret = args
        types = [r.typ for r in mocks.resources]
        # Three roles per tier, the queue tier's worker, and the Redis user.
        assert types.count("pulumi-python:dynamic/secrets:GeneratedSecret") == 4 * len(TIER_ROLES) + 1 + 1
        assert {tier: sorted(roles) for tier, roles in platform.tier_passwords.items()}["queue"] == [
            "app",
            "migrator",
            "readonly",
            "worker",
        ]
        assert "worker" not in platform.tier_passwords["oltp"]
        user = next(r for r in mocks.resources if r.typ == "pulumi-python:dynamic/redis:User")
        assert user.inputs["username"] == "pm-queue"
        assert user.inputs["key_prefixes"] == ["queue:"]
        assert user.custom is True
        assert url == "redis://pm-queue:generated-pm-redis-queue-password@127.0.0.1:6390/0"
        assert is_secret is True

    # Resources register asynchronously: wait for every tier password as well, not only the Redis URL,
    # before counting what was declared.
    passwords = [secret for roles in platform.tier_passwords.values() for secret in roles.values()]
    return pulumi.Output.all(
        platform.redis_url, pulumi.Output.is_secret(platform.redis_url), *passwords
    ).apply(lambda args: check(args[:2]))
