"""Machine-wide claims on the extra addresses put on podman's bridge (additional IPs of simulated instances).

podman's IPAM knows only the containers' main addresses. An additional IP is added inside a container's
network namespace, so nothing stops two simulators on one machine (parallel test workers, each with its
own) from picking the same one, and then two containers answer for it on the bridge. Each address taken
gets a claim file made exclusively (under one lock) naming the process that holds it; a claim lapses when
that process is gone, so nothing needs releasing after a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import random
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from devenv.base import pid_alive

CLAIMS_DIR = Path(tempfile.gettempdir()) / "penguinmails-bridge-ips"
PICK_ATTEMPTS = 1000


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    CLAIMS_DIR.mkdir(parents=True, exist_ok=True)
    with (CLAIMS_DIR / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def holder(ip: str) -> int | None:
    """The live process that holds ``ip``, or None (unclaimed, or its claimant is gone)."""
    try:
        pid = int((CLAIMS_DIR / ip).read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid > 0 and pid_alive(pid) else None


def _claim_unlocked(ip: str) -> bool:
    owner = holder(ip)
    if owner is not None:
        return owner == os.getpid()
    (CLAIMS_DIR / ip).write_text(str(os.getpid()))
    return True


def claim(ip: str) -> bool:
    """Claim ``ip`` for this process: True if it is now ours (or was already), False if a live one holds it."""
    ip = str(ipaddress.ip_address(ip))
    with _locked():
        return _claim_unlocked(ip)


def pick(network: ipaddress.IPv4Network, avoid: Iterable[str] = ()) -> str:
    """A random address of ``network`` (not its first two or last) outside ``avoid``, claimed for this
    process."""
    avoid = set(avoid)
    with _locked():
        for _ in range(PICK_ATTEMPTS):
            ip = str(network[random.randrange(2, network.num_addresses - 1)])
            if ip not in avoid and _claim_unlocked(ip):
                return ip
    raise RuntimeError(f"no unclaimed address found in {network} after {PICK_ATTEMPTS} tries")


def release(ip: str) -> None:
    """Give ``ip`` back if this process holds it (a claim of another process is left alone)."""
    with _locked():
        if holder(ip) == os.getpid():
            (CLAIMS_DIR / ip).unlink(missing_ok=True)
