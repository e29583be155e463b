"""Backup metrics of the penguinmails exporter: age and last result of each pgBackRest stanza.

Read from ``pgbackrest info --output=json`` (as the postgres user, like every pgBackRest command here) and
from the result file ``penguinmails db backup`` leaves (pgBackRest lists only complete backups, so a failed
one shows only there). Cached for ``ttl`` seconds: ``info`` asks the repository, which a scrape should not
do every 15 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field


class BackupSource(BaseModel):
    """One stanza: its name and the folder of its pgBackRest files (``<server dir>/pgbackrest``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stanza: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    work_dir: str


class BackupReader:
    def __init__(self, sources: list[BackupSource], ttl: float = 60.0):
        self.sources = sources
        self.ttl = ttl
        self._cache: tuple[float, list[tuple[str, float | None, bool]]] | None = None
        self._lock = threading.Lock()

    def _read(self) -> list[tuple[str, float | None, bool]]:
        # Imported here: the exporter runs on hosts without pulumi, which the pgBackRest module pulls in.
        from modules.postgres.backup import pgbackrest as pb

        rows = []
        for source in self.sources:
            cluster = pb.Cluster(source.stanza, Path(source.work_dir).parent / "data", 0)
            try:
                entry = pb.info(cluster)
                last = pb.last_backup(entry)
                stamp = float(last["timestamp"]["stop"]) if last else None
                ok = entry is not None and entry.get("status", {}).get("code") == 0 and last is not None
            except pb.BackupError:
                stamp, ok = None, False
            result = pb.read_result(cluster)
            if result is not None and not result.get("ok"):
                ok = False
            rows.append((source.stanza, stamp, ok))
        return rows

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            if self._cache is None or time.monotonic() - self._cache[0] > self.ttl:
                self._cache = (time.monotonic(), self._read())
            rows = self._cache[1]
        success = GaugeMetricFamily(
            "penguinmails_backup_last_success_timestamp_seconds",
            "End of the newest complete backup of the stanza",
            labels=["stanza"],
        )
        age = GaugeMetricFamily(
            "penguinmails_backup_age_seconds",
            "Seconds since the newest complete backup ended",
            labels=["stanza"],
        )
        ok = GaugeMetricFamily(
            "penguinmails_backup_last_ok",
            "1 when the last backup and the stanza's state are good",
            labels=["stanza"],
        )
        now = time.time()
        for stanza, stamp, good in rows:
            if stamp is not None:
                success.add_metric([stanza], stamp)
                age.add_metric([stanza], max(0.0, now - stamp))
            ok.add_metric([stanza], 1.0 if good else 0.0)
        yield success
        yield age
        yield ok
