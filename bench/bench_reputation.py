"""DNSBL checks at scale: 1,000 sending IPs x 5 zones against a private BIND, with bounded concurrency.

The zones are local (``z1…z5.dnsbl.bench.test`` on a private BIND on loopback); 1% of the IPs are listed in
each zone with an A and a TXT record (so the listed ones cost a second query), a tenth of the IPs are IPv6.
Each round is :func:`modules.reputation.dnsbl.check`, the code the exporter's check loop runs; the target
is < 10 s per round at the default concurrency (50).
"""

from __future__ import annotations

import ipaddress
import tempfile
import time
from pathlib import Path

IPS = 1000
ZONES = [f"z{i}.dnsbl.bench.test" for i in range(1, 6)]
LISTED_EVERY = 100


def _ips() -> list[str]:
    v4 = [str(ipaddress.ip_address("198.18.0.0") + i) for i in range(IPS - IPS // 10)]
    v6 = [str(ipaddress.ip_address("2001:db8::") + i) for i in range(IPS // 10)]
    return v4 + v6


def run() -> dict:
    from modules.dns.rfc2136 import Change
    from modules.reputation.dnsbl import Outcome, Zone, check, reverse_ip
    from tests.support.dns import client, private_bind

    ips = _ips()
    with tempfile.TemporaryDirectory(prefix="bench-reputation-") as folder:
        with private_bind(Path(folder), ZONES) as bind:
            listed = 0
            for offset, zone in enumerate(ZONES):
                changes = []
                for ip in ips[offset::LISTED_EVERY]:
                    name = f"{reverse_ip(ip)}.{zone}."
                    changes += [
                        Change("add", name, "A", "127.0.0.2", 60),
                        Change("add", name, "TXT", "bench", 60),
                    ]
                    listed += 1
                client(bind).update(zone, changes)
            resolvers = [f"{bind.host}:{bind.port}"]
            rounds = {}
            for concurrency in (50, 10, 200):
                started = time.perf_counter()
                results = check(
                    ips, [Zone(z) for z in ZONES], resolvers, concurrency=concurrency, timeout=2.0
                )
                seconds = time.perf_counter() - started
                counts = {o.value: sum(1 for r in results if r.outcome is o) for o in Outcome}
                if counts["listed"] != listed or counts["error"]:
                    raise AssertionError(f"concurrency {concurrency}: expected {listed} listed, got {counts}")
                queries = len(results) + counts["listed"]  # A for every pair, TXT for the listed
                rounds[f"concurrency_{concurrency}"] = {
                    "seconds": round(seconds, 2),
                    "queries": queries,
                    "queries_per_second": round(queries / seconds),
                    "outcomes": counts,
                }
    return {
        "ips": len(ips),
        "zones": len(ZONES),
        "pairs": len(ips) * len(ZONES),
        "listed_pairs": listed,
        "target_seconds": 10,
        "rounds": rounds,
    }
