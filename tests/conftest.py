"""Shared fixtures: the local services' environment and a factory for isolated engine stacks."""

from __future__ import annotations

import asyncio
import os

import pytest

from devenv.registry import environment, services


@pytest.fixture(autouse=True)
def _current_event_loop():
    """Give the main thread an event loop when an earlier test's ``asyncio.run`` left it none.

    Pulumi's mocks and ``@pulumi.runtime.test`` use the thread's current loop; ``asyncio.run`` (the DNSBL
    checker) closes its loop and unsets it, after which they fail with "no current event loop".
    """
    policy = asyncio.get_event_loop_policy()
    try:
        loop = policy.get_event_loop()
    except RuntimeError:
        loop = None
    if loop is None or loop.is_closed():
        policy.set_event_loop(policy.new_event_loop())
    yield


@pytest.fixture(scope="session")
def devenv_env() -> dict[str, str]:
    """Start every local service (idempotent) and return the variables that reach them.

    CI and `make test` start them beforehand; starting here too keeps a bare `pytest` run honest
    instead of skipping tests whose service is missing.
    """
    for service in services():
        service.start()
    env = environment()
    os.environ.update(env)
    return env
