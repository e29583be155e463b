"""Fixtures shared by the Hostwinds unit tests."""

from __future__ import annotations

import pytest


class Bucket:
    """A clock for the simulator's rate limit that moves only when a test (or a patched sleep) moves it."""

    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def bucket() -> Bucket:
    return Bucket()
