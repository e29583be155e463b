"""DNSBL checks: every sending IP against every zone, through the given resolvers, with bounded concurrency.

A DNSBL answers a query for ``<reversed ip>.<zone>`` with an A record in 127.0.0.0/8 when the IP is listed
(the TXT record says why) and NXDOMAIN when it is not. Anything else is an *error*, never a listing and
never a clean result: a timeout or SERVFAIL, an address outside 127.0.0.0/8 (a resolver that rewrites
NXDOMAIN), or Spamhaus' 127.255.255.x codes, which mean the query itself was refused (public resolver,
over the free limit, bad DQS key). Quarantining an IP on such an answer would take every IP out at once.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

from modules.config.reputation import split_hostport

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# 127.255.255.0/24: the query was refused or unusable (Spamhaus: .252 bad key, .254 public resolver,
# .255 too many queries); not about the IP at all.
REFUSED = ipaddress.ip_network("127.255.255.0/24")
REFUSED_CODES = {
    "127.255.255.252": "typo in the DQS key or zone",
    "127.255.255.254": "query through a public or open resolver",
    "127.255.255.255": "excessive number of queries",
}


class Outcome(enum.StrEnum):
    LISTED = "listed"
    CLEAN = "clean"
    ERROR = "error"


@dataclass(frozen=True)
class Zone:
    """One zone to check; ``query_key`` (commercial services) goes between the IP and the zone, and is
    never printed or exported: the zone's ``name`` is its label."""

    name: str
    query_key: str | None = field(default=None, repr=False)

    def query_name(self, ip: str) -> str:
        key = f"{self.query_key}." if self.query_key else ""
        return f"{reverse_ip(ip)}.{key}{self.name}."


@dataclass(frozen=True)
class Result:
    ip: str
    zone: str
    outcome: Outcome
    codes: tuple[str, ...] = ()
    reason: str | None = None  # the list's TXT (why it lists the IP), or what went wrong
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"state": self.outcome.value, "codes": list(self.codes), "reason": self.reason}


def reverse_ip(ip: str) -> str:
    """The DNSBL form: IPv4 octets reversed (``2.0.0.127``), IPv6 nibbles reversed (RFC 5782)."""
    address = ipaddress.ip_address(ip)
    if address.version == 4:
        return ".".join(reversed(str(address).split(".")))
    return ".".join(reversed(address.exploded.replace(":", "")))


def classify(addresses: Sequence[str]) -> tuple[Outcome, str | None]:
    """What an A answer means: LISTED (all in 127.0.0.0/8), or ERROR with the reason."""
    if not addresses:
        return Outcome.CLEAN, None
    for text in addresses:
        address = ipaddress.ip_address(text)
        if address.version != 4 or address not in LOOPBACK:
            return Outcome.ERROR, f"answer {text} is outside 127.0.0.0/8 (the resolver rewrites answers)"
        if address in REFUSED:
            why = REFUSED_CODES.get(text, "the list refused the query")
            return Outcome.ERROR, f"refused/unusable: {text} ({why})"
    return Outcome.LISTED, None


def make_resolver(resolvers: Iterable[str], timeout: float) -> dns.asyncresolver.Resolver:
    """A resolver for exactly ``resolvers`` (``host:port``; none: the host's resolv.conf), no cache, no
    search list, one ``timeout`` per query, and SERVFAIL reported rather than retried."""
    servers = list(resolvers)
    resolver = dns.asyncresolver.Resolver(configure=not servers)
    if servers:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(*split_hostport(s)) for s in servers]
    resolver.cache = None
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.retry_servfail = False
    return resolver


async def _lookup(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> list[str]:
    answer = await resolver.resolve(dns.name.from_text(name), rdtype, search=False, raise_on_no_answer=False)
    if answer.rrset is None:
        return []
    if rdtype == "TXT":
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer.rrset]
    return sorted(r.address for r in answer.rrset)


async def check_one(
    resolver: dns.asyncresolver.Resolver, ip: str, zone: Zone, limit: asyncio.Semaphore
) -> Result:
    name = zone.query_name(ip)
    async with limit:
        started = time.monotonic()
        try:
            codes = await _lookup(resolver, name, "A")
        except dns.resolver.NXDOMAIN:
            return Result(ip, zone.name, Outcome.CLEAN, seconds=time.monotonic() - started)
        except dns.exception.Timeout:
            return Result(ip, zone.name, Outcome.ERROR, reason="timeout", seconds=time.monotonic() - started)
        except dns.resolver.NoNameservers as exc:
            return Result(
                ip, zone.name, Outcome.ERROR, reason=_servfail(exc), seconds=time.monotonic() - started
            )
        except dns.exception.DNSException as exc:
            return Result(
                ip, zone.name, Outcome.ERROR, reason=type(exc).__name__, seconds=time.monotonic() - started
            )
        outcome, why = classify(codes)
        reason = why
        if outcome is Outcome.LISTED:
            try:
                reason = "; ".join(await _lookup(resolver, name, "TXT")) or None
            except dns.exception.DNSException:
                reason = None  # the listing stands; only its explanation is missing
        return Result(ip, zone.name, outcome, tuple(codes), reason, time.monotonic() - started)


def _servfail(exc: dns.resolver.NoNameservers) -> str:
    text = str(exc)
    return "SERVFAIL" if "SERVFAIL" in text else "no resolver answered"


async def check_async(
    ips: Iterable[str],
    zones: Iterable[Zone],
    resolvers: Iterable[str],
    concurrency: int = 50,
    timeout: float = 2.0,
) -> list[Result]:
    """Every ip x zone, at most ``concurrency`` queries in flight; results in ip, zone order."""
    resolver = make_resolver(resolvers, timeout)
    limit = asyncio.Semaphore(concurrency)
    zones = list(zones)
    tasks = [check_one(resolver, str(ipaddress.ip_address(ip)), zone, limit) for ip in ips for zone in zones]
    return list(await asyncio.gather(*tasks))


def check(
    ips: Iterable[str],
    zones: Iterable[Zone],
    resolvers: Iterable[str],
    concurrency: int = 50,
    timeout: float = 2.0,
) -> list[Result]:
    """:func:`check_async` from synchronous code (the exporter's check thread, the CLI, the bench)."""
    return asyncio.run(check_async(ips, zones, resolvers, concurrency, timeout))


@dataclass(frozen=True)
class IpVerdict:
    """One IP over all zones: listed anywhere, clean everywhere, or undecided (an error, none listed)."""

    ip: str
    outcome: Outcome
    results: tuple[Result, ...]

    @property
    def listed_zones(self) -> list[str]:
        return [r.zone for r in self.results if r.outcome is Outcome.LISTED]

    def blacklist_status(self) -> dict[str, object]:
        """The ``provider_blacklist_status`` document: per zone ``{state, codes, reason}``."""
        return {r.zone: r.as_dict() for r in self.results}


def verdicts(results: Iterable[Result]) -> list[IpVerdict]:
    """Per IP: LISTED when any zone lists it, CLEAN when every zone answered NXDOMAIN, else ERROR (a
    listing elsewhere wins over errors; a clean verdict needs every zone to have answered)."""
    by_ip: dict[str, list[Result]] = {}
    for result in results:
        by_ip.setdefault(result.ip, []).append(result)
    found = []
    for ip, rows in by_ip.items():
        outcomes = {r.outcome for r in rows}
        if Outcome.LISTED in outcomes:
            outcome = Outcome.LISTED
        elif outcomes == {Outcome.CLEAN}:
            outcome = Outcome.CLEAN
        else:
            outcome = Outcome.ERROR
        found.append(IpVerdict(ip, outcome, tuple(rows)))
    return found
