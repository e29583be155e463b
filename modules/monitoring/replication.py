"""Replication lag of the self-hosted tiers' streaming replicas, as the penguinmails exporter's gauge
``penguinmails_postgres_replication_lag_seconds{tier}``.

Read on the replica itself as the tier's readonly role (the ``readonly_replica_url`` output): the functions
it calls are PUBLIC, so no monitoring superuser is needed. A standby that has replayed all it received is
0 s behind (an idle primary sends nothing, which is not lag); otherwise the age of the last replayed
transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import psycopg
from prometheus_client.core import GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field

LAG_QUERY = """
SELECT CASE
         WHEN NOT pg_is_in_recovery() THEN NULL
         WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
         ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())
       END
"""


class ReplicaSource(BaseModel):
    """One tier's replica: its readonly URL (a secret) and the tier's CA (PEM) to verify it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tier: str = Field(pattern=r"^[a-z]+$")
    url: str = Field(repr=False, pattern=r"^postgres(ql)?://")
    ca_certificate: str | None = None


def replication_lag_seconds(url: str, sslrootcert: str | None = None, timeout: float = 3.0) -> float | None:
    """Seconds the replica at ``url`` is behind; None when the server is not a standby."""
    extra = {"sslrootcert": sslrootcert} if sslrootcert else {}
    with psycopg.connect(url, connect_timeout=max(1, int(timeout)), autocommit=True, **extra) as conn:
        conn.execute(f"SET statement_timeout = {int(timeout * 1000)}")
        value = conn.execute(LAG_QUERY).fetchone()[0]
    return None if value is None else max(0.0, float(value))


def collect(
    sources: Iterable[ReplicaSource], timeout: float, up: GaugeMetricFamily
) -> Iterator[GaugeMetricFamily]:
    """The lag gauge for every replica that answered; ``up`` gets ``replica_<tier>`` 1 or 0."""
    sources = list(sources)
    if not sources:
        return
    lag = GaugeMetricFamily(
        "penguinmails_postgres_replication_lag_seconds",
        "Seconds the tier's streaming replica is behind its primary (0: it replayed all it received)",
        labels=["tier"],
    )
    for source in sources:
        try:
            # Imported here: the exporter runs on hosts without pulumi, which modules.postgres.client pulls in.
            from modules.postgres.client import ca_file

            root = ca_file(source.ca_certificate) if source.ca_certificate else None
            value = replication_lag_seconds(source.url, root, timeout)
        except psycopg.Error:
            up.add_metric([f"replica_{source.tier}"], 0.0)
            continue
        up.add_metric([f"replica_{source.tier}"], 1.0 if value is not None else 0.0)
        if value is not None:
            lag.add_metric([source.tier], value)
    yield lag
