"""One DNSBL round: check every sending IP, write each verdict to OLTP, and say what it found.

The exporter runs :func:`run_round` every check interval in a thread and serves the last
:class:`Round`; ``bench/bench_reputation.py`` runs the DNS half alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from modules.reputation import dnsbl
from modules.reputation.dnsbl import Outcome, Result, Zone
from modules.reputation.store import Recorded, ReputationStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Round:
    finished: float  # unix time the round ended
    seconds: float
    results: tuple[Result, ...]
    verdicts: tuple[dnsbl.IpVerdict, ...]
    recorded: dict[str, Recorded] = field(default_factory=dict)
    store_error: str | None = None  # why OLTP could not be written (the DNS results still stand)

    def quarantined(self) -> dict[str, bool]:
        """Per IP: quarantined as OLTP says after this round, or (no row / no OLTP) as the verdict says."""
        found = {}
        for verdict in self.verdicts:
            row = self.recorded.get(verdict.ip)
            if row is not None and row.known and row.status is not None:
                found[verdict.ip] = row.status == "quarantined"
            elif verdict.outcome is not Outcome.ERROR:
                found[verdict.ip] = verdict.outcome is Outcome.LISTED
        return found


def run_round(
    ips: Sequence[str],
    zones: Sequence[Zone],
    resolvers: Sequence[str],
    concurrency: int,
    timeout: float,
    store: ReputationStore | None = None,
) -> Round:
    started = time.monotonic()
    results = dnsbl.check(ips, zones, resolvers, concurrency, timeout)
    verdicts = dnsbl.verdicts(results)
    checked = datetime.now(UTC)
    recorded: dict[str, Recorded] = {}
    store_error = None
    if store is not None:
        try:
            for verdict in verdicts:
                recorded[verdict.ip] = row = store.record(verdict, checked)
                if verdict.outcome is Outcome.LISTED:
                    log.warning(
                        "IP[%s] is listed on %s: %s (assignments marked: %d)",
                        verdict.ip,
                        ", ".join(verdict.listed_zones),
                        row.status,
                        row.assignments,
                    )
        except Exception as exc:  # OLTP down: the DNS results are still exported
            store_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.error("Recording DNSBL results failed: %s", store_error)
    return Round(
        time.time(), time.monotonic() - started, tuple(results), tuple(verdicts), recorded, store_error
    )
