"""The whole dev-stack slice through the real engine: up → no-change preview → refresh → destroy."""

from __future__ import annotations

import secrets

import pytest
import redis
from pulumi import automation as auto

from tests.support.engine import project_stack

pytestmark = pytest.mark.engine


def _redis_admin(env: dict[str, str]) -> redis.Redis:
    return redis.Redis(
        host=env["PENGUINMAILS_REDIS_HOST"],
        port=int(env["PENGUINMAILS_REDIS_PORT"]),
        password=env["PENGUINMAILS_REDIS_ADMIN_PASSWORD"],
        decode_responses=True,
    )


def test_stack_up_preview_refresh_destroy(tmp_path, devenv_env):
    # A fresh stack name per run: database and role names derive from it, so a killed earlier run's
    # leftovers cannot collide with this one.
    stack_name = f"itest{secrets.token_hex(3)}"
    queue_user = f"pm-{stack_name}-queue"
    stack = project_stack(
        tmp_path,
        stack_name,
        config={"environment": "dev", "redis": {"queue_user": queue_user, "port": 6390}},
    )
    admin = _redis_admin(devenv_env)
    admin.execute_command("ACL", "DELUSER", queue_user)

    up = stack.up(color="never")
    assert up.summary.result == "succeeded"
    assert up.summary.resource_changes.get("create", 0) >= 14
    outputs = up.outputs
    assert outputs["redis_url"].secret is True
    url = outputs["redis_url"].value
    password = url.split(":")[2].split("@")[0]

    # The user is real and limited to the queue's key prefixes.
    worker = redis.Redis(port=6390, username=queue_user, password=password, decode_responses=True)
    assert worker.set("queue:itest", "1") is True
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.set("unrelated", "1")

    # No secret in plain text anywhere in the state at rest (the backend's files, not an export).
    state_files = list((tmp_path / "state" / "backend").rglob("*.json"))
    assert state_files
    for path in state_files:
        assert password not in path.read_text(), f"plaintext secret in {path}"

    preview = stack.preview(color="never", expect_no_changes=True)
    assert set(preview.change_summary) == {"same"}
    # A refresh with nothing changed out of band finds no drift.
    stack.refresh(color="never")
    stack.preview(color="never", expect_no_changes=True)

    # Drift: change the password out of band; refresh notices and the next up restores it.
    admin.execute_command("ACL", "SETUSER", queue_user, "resetpass", ">tampered-password")
    stack.refresh(color="never")
    with pytest.raises(auto.CommandError):
        stack.preview(color="never", expect_no_changes=True)
    stack.up(color="never")
    assert worker.ping() is True

    stack.destroy(color="never")
    assert not admin.execute_command("ACL", "GETUSER", queue_user)
    stack.workspace.remove_stack(stack_name)


def test_bad_config_fails_preview_naming_the_key_before_any_resource(tmp_path, devenv_env):
    stack = project_stack(tmp_path, "broken", config={"fleet": {"nodes": -1}, "redis": {"port": 6390}})
    with pytest.raises(auto.CommandError) as caught:
        stack.preview(color="never")
    text = str(caught.value)
    assert "invalid configuration for stack 'broken'" in text
    assert "penguinmails:fleet.nodes: Input should be greater than or equal to 0 (got -1)" in text
    assert "Traceback" not in text
    # Nothing was declared below the stack itself.
    assert "GeneratedSecret" not in text and "redis:User" not in text
