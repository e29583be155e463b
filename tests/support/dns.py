"""Private BIND servers for the DNS tests and benchmark, and small helpers around them.

Each server is the real devenv service (``devenv/bind.py``) on free ports with its own folder, zones and
TSIG key name, so the shared dev server on 5353 is never touched and tests do not see each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from devenv.bind import BindService, free_port
from modules.dns.lookup import ServerLookup
from modules.dns.rfc2136 import Change, LiveZone, Rfc2136Client, TsigKey


@contextlib.contextmanager
def private_bind(root: Path, zones: Iterable[str], key_name: str = "pm-test") -> Iterator[BindService]:
    service = BindService(
        root=root, port=free_port(), zones=list(zones), key_name=key_name, stats_port=free_port()
    )
    service.start()
    try:
        yield service
    finally:
        service.stop()


def provider_env(bind: BindService) -> dict[str, str]:
    """What a provider process needs to sign for this server."""
    return {"PENGUINMAILS_TSIG_KEY_NAME": bind.key_name, "PENGUINMAILS_TSIG_SECRET": bind.tsig_secret()}


def client(bind: BindService, secret: str | None = None, key_name: str | None = None) -> Rfc2136Client:
    key = TsigKey(key_name or bind.key_name, secret or bind.tsig_secret())
    return Rfc2136Client(bind.host, bind.port, key, timeout=5)


def live(bind: BindService, zone: str) -> LiveZone:
    return client(bind).transfer(zone)


def lookup(bind: BindService) -> ServerLookup:
    return ServerLookup(bind.host, bind.port, timeout=2)


def out_of_band(bind: BindService, zone: str, *changes: Change) -> None:
    """A change made by someone else (same server, same key, outside the toolkit)."""
    client(bind).update(zone, list(changes))


def recordset_props(
    bind: BindService, zone: str, records: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "zone": zone,
        "records": records,
        "server": bind.host,
        "port": bind.port,
        "tsig_key_name": bind.key_name,
        "tsig_algorithm": "hmac-sha256",
        "max_change_share": 0.5,
        "adopt_existing": False,
        "resolvers": [f"{bind.host}:{bind.port}"],
        "default_ttl": 3600,
        "force": False,
        **extra,
    }
