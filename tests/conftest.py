"""Shared fixtures: the local services' environment and a factory for isolated engine stacks."""

from __future__ import annotations

import asyncio
import os

import pytest

from devenv.registry import environment, services

# The main thread's loop when the test modules are imported: Outputs made at import time (module-level
# stand-ins) belong to it, so it is the one to give back.
_IMPORT_LOOP = asyncio.get_event_loop_policy().get_event_loop()


@pytest.fixture(autouse=True)
def _current_event_loop():
    """Give the main thread its loop back when an earlier test's ``asyncio.run`` left it none.

    Pulumi's mocks and ``@pulumi.runtime.test`` use the thread's current loop; ``asyncio.run`` (the DNSBL
    checker) ends by unsetting it, after which they fail with "no current event loop". The loop of import
    time is put back (a new one only if it was closed), since module-level Outputs are attached to it.
    """
    policy = asyncio.get_event_loop_policy()
    try:
        loop = policy.get_event_loop()
    except RuntimeError:
        loop = None
    if loop is None or loop.is_closed():
        policy.set_event_loop(_IMPORT_LOOP if not _IMPORT_LOOP.is_closed() else policy.new_event_loop())
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
