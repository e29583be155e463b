"""Turns across the pytest-xdist workers of one run: ``serial`` tests alone, the others side by side.

A reader-writer lock on two files named after the run: every test holds the room shared, a ``serial`` one
holds it exclusively, so it waits for the running tests to end and holds the others back meanwhile. The
turnstile gives the exclusive side priority: workers that keep starting tests cannot keep it waiting.
"""

from __future__ import annotations

import contextlib
import fcntl
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def flock(path: Path, mode: int) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def turn(run: str, exclusive: bool, folder: Path | None = None) -> Iterator[None]:
    """Hold this worker's turn of run ``run`` (xdist's PYTEST_XDIST_TESTRUNUID) for one test."""
    base = (folder or Path(tempfile.gettempdir())) / f"penguinmails-pytest-{run}"
    turnstile, room = base.with_suffix(".turnstile"), base.with_suffix(".lock")
    if exclusive:
        with flock(turnstile, fcntl.LOCK_EX), flock(room, fcntl.LOCK_EX):
            yield
        return
    with flock(turnstile, fcntl.LOCK_EX):
        pass
    with flock(room, fcntl.LOCK_SH):
        yield
