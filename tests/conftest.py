"""Shared fixtures: the local services' environment and a factory for isolated engine stacks."""

from __future__ import annotations

import asyncio
import fcntl
import os

import pytest

from devenv.registry import environment, services
from tests.support.turns import flock, turn

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
    from devenv.base import devenv_root

    # pytest-xdist workers each run this: one at a time, or two could set up one service's data at once.
    with flock(devenv_root() / ".test-start.lock", fcntl.LOCK_EX):
        for service in services():
            service.start()
    env = environment()
    os.environ.update(env)
    return env


# -- parallel runs (pytest-xdist, `make test` with PYTEST_WORKERS) ------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Set-up, call and tear-down of each test inside its turn (module fixtures included); ``serial``
    tests (they measure or pause the shared dev services) run while no other worker runs one."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run:  # not under pytest-xdist: one test at a time anyway
        return (yield)
    with turn(run, exclusive=item.get_closest_marker("serial") is not None):
        return (yield)
