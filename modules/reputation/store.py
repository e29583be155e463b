"""The checker's OLTP half, as the ``reputation`` role sees it: only the ``reputation.*`` functions.

The role reads and writes no table (schemas/oltp/0009_reputation.sql); each call is one statement on an
autocommit connection with short timeouts, reopened after a failure.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb

from modules.reputation.dnsbl import IpVerdict
from modules.reputation.quarantine import Assignment, IpState


@dataclass(frozen=True)
class Recorded:
    ip: str
    known: bool  # False: the fleet has no row for this address (nothing was written)
    status: str | None
    reputation_state: str | None
    assignments: int  # assignments marked (listed) or unmarked (cleared)


class ReputationStore:
    def __init__(self, url: str, application_name: str = "penguinmails-reputation", timeout: float = 5.0):
        self.url = url
        self.application_name = application_name
        self.timeout = timeout
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(
                self.url,
                autocommit=True,
                application_name=self.application_name,
                connect_timeout=max(1, int(self.timeout)),
                options=f"-c statement_timeout={int(self.timeout * 1000)}",
            )
        return self._conn

    def _call(self, query: str, params: Iterable[object] = ()) -> list[tuple]:
        with self._lock:
            conn = self.connection()
            try:
                return conn.execute(query, list(params)).fetchall()
            except psycopg.Error:
                conn.close()  # the next call reconnects; this one reports the failure
                raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def record(self, verdict: IpVerdict, checked: datetime) -> Recorded:
        row = self._call(
            "SELECT * FROM reputation.record_check(%s::inet, %s, %s, %s)",
            [verdict.ip, verdict.outcome.value, Jsonb(verdict.blacklist_status()), checked],
        )[0]
        return Recorded(verdict.ip, bool(row[0]), row[1], row[2], int(row[3]))

    def ip_states(self) -> dict[str, tuple[str, str]]:
        """``{ip: (status, reputation_state)}`` of every fleet IP."""
        return {
            str(ip): (status, state)
            for ip, status, state, _ in self._call("SELECT * FROM reputation.ip_states()")
        }

    def assignments(self) -> tuple[list[Assignment], dict[str, IpState]]:
        """The planner's input: live assignments, and each assigned IP's state with its tenant."""
        rows = self._call("SELECT * FROM reputation.assignments()")
        assignments = [Assignment(domain, str(tenant), str(ip)) for tenant, domain, ip, _s, _w, _q in rows]
        states = {str(ip): IpState(str(tenant), status) for tenant, _d, ip, status, _w, _q in rows}
        return assignments, states
