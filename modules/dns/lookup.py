"""Name lookups the validators and the verifier share, behind one small injectable interface.

A lookup is a callable ``(name, rdtype) -> Answer``. Unit tests pass a :class:`StaticLookup` (no network);
preview-time validation layers the planned records over the configured resolver (:class:`OverlayLookup`),
so a record published in the same run counts as present; verification asks one server directly
(:class:`ServerLookup`) and counts the messages it sends.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from modules.dns.records import from_rdata, normalize_name

OK, NXDOMAIN, NODATA, ERROR = "ok", "nxdomain", "nodata", "error"
MAX_CNAME_CHAIN = 8


@dataclass(frozen=True)
class Answer:
    """What a lookup found: ``status`` is ok, nxdomain, nodata or error (then ``reason`` says why)."""

    status: str
    values: tuple[str, ...] = ()
    reason: str = ""
    cname_chain: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def void(self) -> bool:
        """An answer with no data (RFC 7208 4.6.4 'void lookup')."""
        return self.status in (NXDOMAIN, NODATA)


class Lookup(Protocol):
    def __call__(self, name: str, rdtype: str) -> Answer: ...


def parse_server(text: str, default_port: int = 53) -> tuple[str, int]:
    """``127.0.0.1``, ``127.0.0.1:5353``, ``[::1]:5353`` or ``::1`` → (address, port)."""
    text = text.strip()
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        port = int(rest.lstrip(":")) if rest.strip(":") else default_port
    elif text.count(":") == 1:
        address, _, port_text = text.partition(":")
        port = int(port_text)
    else:
        address, port = text, default_port
    ipaddress.ip_address(address)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1..65535")
    return address, port


class StaticLookup:
    """Answers from a table ``{(name, TYPE): [values]}``; a name with no entry at all is NXDOMAIN."""

    def __init__(self, table: Mapping[tuple[str, str], Iterable[str]] | None = None):
        self.table: dict[tuple[str, str], tuple[str, ...]] = {}
        self.names: set[str] = set()
        self.queries = 0
        for (name, rdtype), values in (table or {}).items():
            self.add(name, rdtype, values)

    def add(self, name: str, rdtype: str, values: Iterable[str]) -> None:
        name = name.rstrip(".").lower()
        key = (name, rdtype.upper())
        self.table[key] = tuple(self.table.get(key, ())) + tuple(values)
        self.names.add(name)

    def has_name(self, name: str) -> bool:
        return name.rstrip(".").lower() in self.names

    def __call__(self, name: str, rdtype: str) -> Answer:
        self.queries += 1
        name, rdtype = name.rstrip(".").lower(), rdtype.upper()
        chain: list[str] = []
        for _ in range(MAX_CNAME_CHAIN):
            values = self.table.get((name, rdtype))
            if values:
                return Answer(OK, values, cname_chain=tuple(chain))
            cname = self.table.get((name, "CNAME"))
            if not cname or rdtype == "CNAME":
                break
            chain.append(name)
            name = cname[0].rstrip(".").lower()
        if name in self.names:
            return Answer(NODATA, cname_chain=tuple(chain))
        return Answer(NXDOMAIN, cname_chain=tuple(chain))


class OverlayLookup:
    """The planned records first, then ``fallback`` for names the plan does not hold (if any)."""

    def __init__(self, planned: StaticLookup, fallback: Lookup | None = None):
        self.planned = planned
        self.fallback = fallback

    def __call__(self, name: str, rdtype: str) -> Answer:
        answer = self.planned(name, rdtype)
        if answer.ok or self.fallback is None:
            return answer
        outside = self.fallback(name, rdtype)
        if outside.ok or answer.status == NODATA:
            return outside if outside.ok else answer
        return outside


class CachingLookup:
    """Remembers answers for one validation run (the lookup counter asks the same names repeatedly)."""

    def __init__(self, inner: Lookup):
        self.inner = inner
        self._cache: dict[tuple[str, str], Answer] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str, rdtype: str) -> Answer:
        key = (name.rstrip(".").lower(), rdtype.upper())
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        answer = self.inner(*key)
        with self._lock:
            self._cache[key] = answer
        return answer


class ServerLookup:
    """Ask one server directly (UDP, TCP when truncated) and follow CNAMEs; counts the messages it sends.

    Used for verification against the authoritative server and as the configured resolver in dev, where
    the only server is the local BIND (which does not recurse and refuses names outside its zones).
    """

    def __init__(self, address: str, port: int = 53, timeout: float = 3.0):
        self.address, self.port, self.timeout = address, port, timeout
        self.messages = 0
        self._lock = threading.Lock()

    def _ask(self, name: str, rdtype: str) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        with self._lock:
            self.messages += 1
        response, _ = dns.query.udp_with_fallback(query, self.address, timeout=self.timeout, port=self.port)
        return response

    def __call__(self, name: str, rdtype: str) -> Answer:
        try:
            name = normalize_name(name)
        except ValueError as exc:
            return Answer(ERROR, reason=str(exc))
        rdtype = rdtype.upper()
        chain: list[str] = []
        current = name
        for _ in range(MAX_CNAME_CHAIN):
            try:
                response = self._ask(current, rdtype)
            except (dns.exception.DNSException, OSError) as exc:
                reason = (
                    "timed out" if isinstance(exc, dns.exception.Timeout) else str(exc) or type(exc).__name__
                )
                return Answer(ERROR, reason=f"{self.address}:{self.port}: {reason}", cname_chain=tuple(chain))
            rcode = response.rcode()
            if rcode == dns.rcode.NXDOMAIN:
                return Answer(NXDOMAIN, cname_chain=tuple(chain))
            if rcode != dns.rcode.NOERROR:
                text = dns.rcode.to_text(rcode)
                return Answer(
                    ERROR, reason=f"{self.address}:{self.port} answered {text}", cname_chain=tuple(chain)
                )
            values, target = _from_answer(response, current, rdtype)
            if values:
                return Answer(OK, values, cname_chain=tuple(chain))
            if target is None or rdtype == "CNAME":
                return Answer(NODATA, cname_chain=tuple(chain))
            chain.append(current)
            current = target
        return Answer(ERROR, reason=f"CNAME chain from {name} is longer than {MAX_CNAME_CHAIN}")


def _from_answer(response: dns.message.Message, name: str, rdtype: str) -> tuple[tuple[str, ...], str | None]:
    """Values for (name, rdtype) in an answer section, following CNAMEs inside it; else the CNAME target."""
    wanted = dns.rdatatype.from_text(rdtype)
    current = dns.name.from_text(name)
    for _ in range(MAX_CNAME_CHAIN):
        found = None
        cname = None
        for rrset in response.answer:
            if rrset.name != current:
                continue
            if rrset.rdtype == wanted:
                found = rrset
            elif rrset.rdtype == dns.rdatatype.CNAME:
                cname = rrset[0].target
        if found is not None:
            return tuple(sorted(from_rdata(rdata) for rdata in found)), None
        if cname is None:
            return (), None
        current = cname
    return (), current.to_text(omit_final_dot=True)


class ResolverLookup:
    """The system resolver, or the given ``address:port`` servers through dnspython's stub resolver."""

    def __init__(self, servers: list[str] | None = None, timeout: float = 3.0):
        if servers:
            self.resolver = dns.resolver.Resolver(configure=False)
            parsed = [parse_server(server) for server in servers]
            self.resolver.nameservers = [address for address, _ in parsed]
            self.resolver.port = parsed[0][1]
        else:
            self.resolver = dns.resolver.Resolver()
        self.resolver.lifetime = timeout
        self.resolver.timeout = timeout

    def __call__(self, name: str, rdtype: str) -> Answer:
        try:
            answer = self.resolver.resolve(name, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return Answer(NXDOMAIN)
        except (dns.exception.DNSException, OSError) as exc:
            return Answer(ERROR, reason=str(exc) or type(exc).__name__)
        if answer.rrset is None:
            return Answer(NODATA)
        chain = () if answer.canonical_name == answer.qname else (answer.qname.to_text(omit_final_dot=True),)
        return Answer(OK, tuple(sorted(from_rdata(r) for r in answer.rrset)), cname_chain=chain)


def lookup_for(servers: list[str] | None, timeout: float = 3.0) -> Lookup:
    """The configured resolver: one ``address[:port]`` → :class:`ServerLookup`; none → the system's."""
    if servers and len(servers) == 1:
        address, port = parse_server(servers[0])
        return ServerLookup(address, port, timeout)
    return ResolverLookup(servers or None, timeout)
