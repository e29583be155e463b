"""`penguinmails queue dead-letters`: refusals that come before the stack is read."""

from __future__ import annotations

import pytest

from modules.cli import queue_cmd
from modules.errors import ToolkitError


@pytest.fixture
def no_stack(monkeypatch):
    """Fails the test if a command gets as far as reading the stack's outputs."""

    def reached(*_args, **_kwargs):
        raise AssertionError("the command read the stack before refusing")

    monkeypatch.setattr(queue_cmd, "pulumi_json", reached)


def _command(name):
    return next(c.callback for c in queue_cmd.dead.registered_commands if c.name == name)


@pytest.mark.parametrize("name", ["replay", "purge"])
def test_an_unfiltered_bulk_action_needs_yes(name, no_stack):
    with pytest.raises(
        ToolkitError, match=r"every dead letter of every queue\? name --queue/--tenant/--id, or add --yes"
    ):
        _command(name)(stack="dev", cwd=".", queue=None, tenant=None, ids=[], limit=None, yes=False)


@pytest.mark.parametrize("name", ["replay", "purge"])
def test_a_tenant_that_is_not_a_uuid_is_refused(name, no_stack):
    with pytest.raises(ToolkitError, match="--tenant: 'acme' is not a uuid"):
        _command(name)(stack="dev", cwd=".", queue=None, tenant="acme", ids=[], limit=None, yes=False)


def test_a_stack_without_queue_outputs_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(queue_cmd, "pulumi_json", lambda *a, **k: {"redis_url": "redis://x"})
    with pytest.raises(ToolkitError, match="no postgres_queue_worker_url, queue_namespace output"):
        queue_cmd._connect("dev", ".")
