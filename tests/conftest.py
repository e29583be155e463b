"""Shared fixtures: the local services' environment and a factory for isolated engine stacks."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
    from devenv.base import devenv_root

    # pytest-xdist workers each run this: one at a time, or two could set up one service's data at once.
    with _flock(devenv_root() / ".test-start.lock", fcntl.LOCK_EX):
        for service in services():
            service.start()
    env = environment()
    os.environ.update(env)
    return env


# -- parallel runs (pytest-xdist, `make test` with PYTEST_WORKERS) ------------------------------------------


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _workers_turn(exclusive: bool) -> Iterator[None]:
    """One test at a time across this run's workers for ``serial`` tests; any number for the others.

    A reader-writer lock on files of this run (xdist's run id): a ``serial`` test waits for the running
    tests to end and holds the others back meanwhile. The turnstile gives it priority, so workers that go
    on starting tests cannot keep it waiting for ever.
    """
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run:  # not under xdist: tests run one at a time anyway
        yield
        return
    base = Path(tempfile.gettempdir()) / f"penguinmails-pytest-{run}"
    turnstile, room = base.with_suffix(".turnstile"), base.with_suffix(".lock")
    if exclusive:
        with _flock(turnstile, fcntl.LOCK_EX), _flock(room, fcntl.LOCK_EX):
            yield
        return
    with _flock(turnstile, fcntl.LOCK_EX):
        pass
    with _flock(room, fcntl.LOCK_SH):
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Set-up, call and tear-down of each test inside its turn (module fixtures included)."""
    with _workers_turn(exclusive=item.get_closest_marker("serial") is not None):
        return (yield)
