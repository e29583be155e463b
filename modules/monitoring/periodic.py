"""A check on a timer in a daemon thread, whose newest result scrapes serve (the exporter's loops)."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("modules.monitoring.exporter")


class Periodic:
    """A check that runs every ``interval`` seconds in a daemon thread; :attr:`last` is its newest result."""

    what = "check"

    def __init__(self, interval: float):
        self.interval = interval
        self.last = None
        self.rounds = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wanted(self) -> bool:
        return True

    def check(self):
        raise NotImplementedError

    def run_once(self):
        self.last = self.check()
        self.rounds += 1
        return self.last

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.run_once()
            except Exception:
                log.exception("%s failed", self.what)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def start(self) -> None:
        if self.wanted() and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.what, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
