"""An RFC 2136 client: read a zone (AXFR), send TSIG-signed dynamic updates, turn answers into typed errors.

Works against any primary that speaks RFC 2136 and TSIG (BIND, Knot, PowerDNS). Every message it sends
is counted by kind, which the benchmark and the tests use. The TSIG secret never appears in a message:
errors name the key and the server, and say which setting to check.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.tsig
import dns.update
import dns.xfr

from modules.dns.errors import (
    DnsAuthError,
    DnsConcurrentChange,
    DnsError,
    DnsUnreachable,
    DnsUpdateFailed,
    DnsZoneNotServed,
)
from modules.dns.records import from_rdata, slot_key, slot_of, to_rdata

ALGORITHMS = {"hmac-sha256": dns.tsig.HMAC_SHA256, "hmac-sha512": dns.tsig.HMAC_SHA512}
# Leave room below the 64 KiB TCP message limit for the header, the zone section and the TSIG record.
MAX_MESSAGE_BYTES = 60000
# Names the settings, holds no secret.
_HINT = "the secret config value tsigSecret (dev stacks: PENGUINMAILS_TSIG_SECRET first; staging/production: "
SECRET_HINT = _HINT + "else the CI variable named in secretsFromEnv.tsigSecret)"


@dataclass(frozen=True)
class TsigKey:
    name: str
    secret: str = field(repr=False)
    algorithm: str = "hmac-sha256"

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        if self.algorithm not in ALGORITHMS:
            raise DnsAuthError(
                f"TSIG key {self.name!r}: algorithm {self.algorithm!r} is not one of {', '.join(ALGORITHMS)}"
            )
        try:
            raw = base64.b64decode(self.secret, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if not raw:
            raise DnsAuthError(f"TSIG key {self.name!r}: the secret is not base64 text (check {SECRET_HINT})")
        name = dns.name.from_text(self.name)
        return {name: dns.tsig.Key(name, raw, ALGORITHMS[self.algorithm])}


@dataclass(frozen=True)
class LiveRRset:
    ttl: int
    values: tuple[str, ...]


@dataclass
class LiveZone:
    """A zone as the server holds it: (name, TYPE) → TTL and canonical values."""

    zone: str
    rrsets: dict[tuple[str, str], LiveRRset] = field(default_factory=dict)
    serial: int = 0

    def record_count(self) -> int:
        """Resource records in the zone, SOA excluded (the base of the safety share)."""
        return sum(len(rrset.values) for (_, rtype), rrset in self.rrsets.items() if rtype != "SOA")

    def slot_values(self, key: str) -> tuple[str, ...]:
        name, rtype, slot = key.split("|", 2)
        rrset = self.rrsets.get((name, rtype))
        if rrset is None:
            return ()
        return tuple(v for v in rrset.values if slot_of(rtype, v) == slot)

    def slots_at(self, name: str, rtype: str) -> set[str]:
        rrset = self.rrsets.get((name, rtype))
        return {slot_key(name, rtype, slot_of(rtype, v)) for v in rrset.values} if rrset else set()

    def types_at(self, name: str) -> set[str]:
        return {rtype for (n, rtype) in self.rrsets if n == name}


@dataclass(frozen=True)
class Change:
    """Add or delete one resource record (``value`` canonical)."""

    op: str  # "add" | "delete"
    name: str
    type: str
    value: str
    ttl: int = 0


@dataclass(frozen=True)
class Prerequisite:
    """Compare-and-swap: the RRset at (name, type) must be exactly ``values`` (empty: must not exist)."""

    name: str
    type: str
    values: tuple[str, ...]
    ttl: int = 0  # the live TTL; RFC 2136 ignores it, Route 53 needs it to delete the RRset exactly


@dataclass
class Counters:
    updates: int = 0
    transfers: int = 0
    queries: int = 0

    @property
    def total(self) -> int:
        return self.updates + self.transfers + self.queries


class Rfc2136Client:
    """One server, one key; build it inside provider methods (it holds a socket-free keyring only)."""

    def __init__(self, server: str, port: int, key: TsigKey | None, timeout: float = 10.0):
        self.server, self.port, self.key, self.timeout = server, int(port), key, timeout
        self.counters = Counters()
        self._lock = threading.Lock()
        self._keyring = key.keyring() if key else None

    @property
    def where(self) -> str:
        return f"{self.server}:{self.port}"

    def _count(self, kind: str, n: int = 1) -> None:
        with self._lock:
            setattr(self.counters, kind, getattr(self.counters, kind) + n)

    def _auth_error(self, exc: Exception, zone: str, action: str) -> DnsError:
        name = self.key.name if self.key else "(none)"
        if isinstance(exc, dns.tsig.PeerBadKey):
            return DnsAuthError(
                f"{action} of zone {zone} at {self.where}: the server does not know TSIG key {name!r} "
                "(check dns.zones[].tsig_key_name or PENGUINMAILS_TSIG_KEY_NAME)"
            )
        if isinstance(exc, dns.tsig.PeerBadSignature | dns.tsig.BadSignature):
            return DnsAuthError(
                f"{action} of zone {zone} at {self.where}: TSIG key {name!r} was rejected, the secret is "
                "wrong "
                f"(check {SECRET_HINT})"
            )
        if isinstance(exc, dns.tsig.PeerBadTime | dns.tsig.BadTime):
            return DnsAuthError(
                f"{action} of zone {zone} at {self.where}: TSIG time check failed (clock skew)"
            )
        return DnsAuthError(f"{action} of zone {zone} at {self.where}: TSIG failure ({type(exc).__name__})")

    def transfer(self, zone: str) -> LiveZone:
        """The whole zone by AXFR, signed with the key (one request)."""
        self._count("transfers")
        live = LiveZone(zone)
        kwargs = {}
        if self.key:
            kwargs = {
                "keyring": self._keyring,
                "keyname": self.key.name,
                "keyalgorithm": ALGORITHMS[self.key.algorithm],
            }
        try:
            messages = dns.query.xfr(
                self.server,
                zone,
                port=self.port,
                timeout=self.timeout,
                lifetime=self.timeout * 3,
                relativize=False,
                **kwargs,
            )
            for message in messages:
                for rrset in message.answer:
                    name = rrset.name.to_text(omit_final_dot=True).lower()
                    rtype = dns.rdatatype.to_text(rrset.rdtype)
                    if rtype == "SOA":
                        live.serial = rrset[0].serial
                    old = live.rrsets.get((name, rtype))
                    values = {from_rdata(rdata) for rdata in rrset} | set(old.values if old else ())
                    live.rrsets[(name, rtype)] = LiveRRset(rrset.ttl, tuple(sorted(values)))
        except dns.xfr.TransferError as exc:
            if exc.rcode == dns.rcode.NOTAUTH and self.key is None:
                raise DnsAuthError(
                    f"transfer of zone {zone} at {self.where}: refused without a TSIG key"
                ) from None
            if exc.rcode in (dns.rcode.NOTAUTH, dns.rcode.NXDOMAIN):
                raise DnsZoneNotServed(f"{self.where} is not authoritative for zone {zone}") from None
            raise DnsAuthError(
                f"transfer of zone {zone} at {self.where} was refused ({dns.rcode.to_text(exc.rcode)}): "
                "the key must be allowed to transfer the zone (allow-transfer)"
            ) from None
        except (dns.tsig.PeerError, dns.tsig.BadSignature, dns.tsig.BadTime) as exc:
            raise self._auth_error(exc, zone, "transfer") from None
        except (dns.exception.Timeout, OSError) as exc:
            raise DnsUnreachable(
                f"transfer of zone {zone}: no answer from {self.where} ({_why(exc)})"
            ) from None
        except dns.exception.DNSException as exc:
            raise DnsError(
                f"transfer of zone {zone} from {self.where} failed: {type(exc).__name__}"
            ) from None
        if not live.rrsets:
            raise DnsZoneNotServed(f"{self.where} returned an empty transfer for zone {zone}")
        return live

    def build_messages(
        self, zone: str, changes: Iterable[Change], prerequisites: Iterable[Prerequisite] = ()
    ) -> list[dns.update.UpdateMessage]:
        """As few update messages as fit in 64 KiB (normally one); an RRset's prerequisite stays with its
        changes, so each message is an atomic compare-and-swap on the RRsets it touches."""
        groups: dict[tuple[str, str], tuple[list[Prerequisite], list[Change]]] = {}
        for prerequisite in prerequisites:
            groups.setdefault((prerequisite.name, prerequisite.type), ([], []))[0].append(prerequisite)
        for change in changes:
            groups.setdefault((change.name, change.type), ([], []))[1].append(change)
        batches: list[tuple[list[Prerequisite], list[Change]]] = []
        size = MAX_MESSAGE_BYTES + 1
        for key in sorted(groups):
            prereqs, group_changes = groups[key]
            if not group_changes:
                continue
            cost = self._group_size(zone, prereqs, group_changes)
            if size + cost > MAX_MESSAGE_BYTES:
                batches.append(([], []))
                size = 200
            batches[-1][0].extend(prereqs)
            batches[-1][1].extend(group_changes)
            size += cost
        messages = []
        for prereqs, batch_changes in batches:
            message = self._new_message(zone)
            # Deletions first: a name can then change type (A to CNAME) within one message.
            ordered = [c for c in batch_changes if c.op == "delete"] + [
                c for c in batch_changes if c.op != "delete"
            ]
            self._fill(message, prereqs, ordered)
            messages.append(message)
        return messages

    def _new_message(self, zone: str) -> dns.update.UpdateMessage:
        if self.key:
            return dns.update.UpdateMessage(
                zone,
                keyring=self._keyring,
                keyname=self.key.name,
                keyalgorithm=ALGORITHMS[self.key.algorithm],
            )
        return dns.update.UpdateMessage(zone)

    def _group_size(self, zone: str, prereqs: list[Prerequisite], changes: list[Change]) -> int:
        message = dns.update.UpdateMessage(zone)
        empty = len(message.to_wire())
        self._fill(message, prereqs, changes)
        return len(message.to_wire()) - empty

    @staticmethod
    def _fill(message: dns.update.UpdateMessage, prereqs: list[Prerequisite], changes: list[Change]) -> None:
        for prerequisite in prereqs:
            name = dns.name.from_text(prerequisite.name)
            if prerequisite.values:
                rdataset = dns.rdataset.Rdataset(
                    dns.rdataclass.IN, dns.rdatatype.from_text(prerequisite.type)
                )
                for value in prerequisite.values:
                    rdataset.add(to_rdata(prerequisite.type, value), 0)
                message.present(name, rdataset)
            else:
                message.absent(name, prerequisite.type)
        for change in changes:
            name = dns.name.from_text(change.name)
            rdata = to_rdata(change.type, change.value)
            if change.op == "delete":
                message.delete(name, rdata)
            else:
                message.add(name, change.ttl, rdata)

    def update(self, zone: str, changes: list[Change], prerequisites: Iterable[Prerequisite] = ()) -> int:
        """Send the changes; returns the number of update messages sent (0 when there is nothing to do)."""
        messages = self.build_messages(zone, changes, prerequisites)
        for message in messages:
            self._send(zone, message)
        return len(messages)

    def _send(self, zone: str, message: dns.update.UpdateMessage) -> None:
        self._count("updates")
        try:
            response = dns.query.tcp(message, self.server, port=self.port, timeout=self.timeout)
        except (dns.tsig.PeerError, dns.tsig.BadSignature, dns.tsig.BadTime) as exc:
            raise self._auth_error(exc, zone, "update") from None
        except (dns.exception.Timeout, OSError) as exc:
            raise DnsUnreachable(
                f"update of zone {zone}: no answer from {self.where} ({_why(exc)})"
            ) from None
        except dns.exception.DNSException as exc:
            raise DnsUpdateFailed(
                f"update of zone {zone} at {self.where} failed: {type(exc).__name__}"
            ) from None
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        text = dns.rcode.to_text(rcode)
        if rcode == dns.rcode.REFUSED:
            raise DnsAuthError(
                f"update of zone {zone} at {self.where} was REFUSED: the key is not allowed to update this "
                "zone (update-policy/allow-update) or the update was unsigned"
            )
        if rcode == dns.rcode.NOTAUTH:
            if self.key is None:
                raise DnsAuthError(f"update of zone {zone} at {self.where}: NOTAUTH without a TSIG key")
            raise DnsZoneNotServed(f"{self.where} is not authoritative for zone {zone} (NOTAUTH)")
        if rcode in (dns.rcode.NXRRSET, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.YXDOMAIN):
            raise DnsConcurrentChange(
                f"update of zone {zone} at {self.where}: the zone changed since it was read ({text}); "
                "nothing "
                "was applied, run again"
            )
        raise DnsUpdateFailed(f"update of zone {zone} at {self.where} failed with {text}")

    def query(self, name: str, rdtype: str) -> dns.message.Message:
        """A plain (signed when we have a key) query, for checks that must not depend on a resolver."""
        self._count("queries")
        query = dns.message.make_query(name, rdtype)
        if self.key:
            query.use_tsig(self._keyring, keyname=self.key.name, algorithm=ALGORITHMS[self.key.algorithm])
        try:
            response, _ = dns.query.udp_with_fallback(
                query, self.server, timeout=self.timeout, port=self.port
            )
        except (dns.tsig.PeerError, dns.tsig.BadSignature, dns.tsig.BadTime) as exc:
            raise self._auth_error(exc, name, "query") from None
        except (dns.exception.Timeout, OSError) as exc:
            raise DnsUnreachable(
                f"query {name} {rdtype}: no answer from {self.where} ({_why(exc)})"
            ) from None
        return response


def _why(exc: BaseException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "timed out"
    return getattr(exc, "strerror", None) or type(exc).__name__
