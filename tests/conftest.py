"""Shared fixtures: the local services' environment and a factory for isolated engine stacks."""

from __future__ import annotations

import os

import pytest

from devenv.registry import environment, services


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
