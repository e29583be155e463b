"""The record model: one canonical form that the plan, the validators, the state and the wire all agree on.

A :class:`Record` is an RRset we want: an absolute lower-case name without the final dot, a type, a TTL
and its values in presentation form (TXT values are the *logical* text, split into 255-byte strings only
on the wire). Canonical values make a re-read from the server compare equal to what was declared, so a
no-change run really sends nothing.

Ownership is tracked per *slot*: for most types the whole RRset at (name, type); for TXT the tagged
record it carries (``v=spf1``, ``v=DMARC1`` …) or, for untagged text, the exact value. A zone apex can
then hold our SPF beside someone's site-verification TXT without either touching the other.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
from dns.rdtypes.ANY.TXT import TXT

SUPPORTED_TYPES = ("A", "AAAA", "CNAME", "MX", "PTR", "TXT")
TXT_CHUNK = 255
MIN_TTL, MAX_TTL = 30, 604800
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
TXT_TAGS = ("v=spf1", "v=dmarc1", "v=dkim1", "v=stsv1", "v=tlsrptv1")


class RecordError(ValueError):
    """A record that cannot be put in canonical form; the message says which part and why."""


def normalize_name(name: str) -> str:
    """Lower-case, no final dot; raises :class:`RecordError` for a name DNS cannot carry."""
    text = str(name).strip().rstrip(".").lower()
    if not text:
        raise RecordError("the name is empty")
    if len(text) > 253:
        raise RecordError(f"{text[:40]}…: the name is longer than 253 characters")
    for label in text.split("."):
        if not _LABEL_RE.match(label):
            raise RecordError(f"{text}: label {label!r} is not 1-63 letters, digits, '-' or '_'")
    return text


def in_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def relative_name(name: str, zone: str) -> str:
    """``@`` for the apex, else the part before the zone (for messages and zone files)."""
    return "@" if name == zone else name.removesuffix("." + zone)


def absolute(target: str) -> str:
    """A target name in absolute presentation form (``mail.example.com.``; ``.`` stays the root)."""
    target = target.strip().lower()
    return target if target.endswith(".") else target + "."


def split_txt(text: str) -> list[bytes]:
    """The character-strings of a TXT record: the UTF-8 text in pieces of at most 255 bytes.

    Joining the pieces gives the text back; an empty text is one empty string (a TXT needs at least one).
    """
    data = text.encode("utf-8")
    if not data:
        return [b""]
    return [data[i : i + TXT_CHUNK] for i in range(0, len(data), TXT_CHUNK)]


def join_txt(strings: Iterable[bytes]) -> str:
    return b"".join(strings).decode("utf-8", errors="backslashreplace")


def to_rdata(rtype: str, value: str) -> dns.rdata.Rdata:
    """The wire form of one canonical value."""
    if rtype == "TXT":
        return TXT(dns.rdataclass.IN, dns.rdatatype.TXT, split_txt(value))
    return dns.rdata.from_text(dns.rdataclass.IN, rtype, value)


def from_rdata(rdata: dns.rdata.Rdata) -> str:
    """The canonical value of an rdata read from a server (TXT strings joined, names lower-cased)."""
    if rdata.rdtype == dns.rdatatype.TXT:
        return join_txt(rdata.strings)
    text = rdata.to_text()
    return (
        text.lower() if rdata.rdtype in (dns.rdatatype.CNAME, dns.rdatatype.MX, dns.rdatatype.PTR) else text
    )


def canonical_value(rtype: str, value: Any) -> str:
    """One value in canonical presentation form; raises :class:`RecordError` naming the problem."""
    if not isinstance(value, str):
        raise RecordError(f"value {value!r} is not text")
    if rtype == "TXT":
        if len(value.encode("utf-8")) > 4000:
            raise RecordError("TXT value is longer than 4000 bytes")
        return value
    text = value.strip()
    if rtype == "A":
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError:
            raise RecordError(f"{text!r} is not an IPv4 address") from None
    if rtype == "AAAA":
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError:
            raise RecordError(f"{text!r} is not an IPv6 address") from None
    if rtype in ("CNAME", "PTR"):
        if text in (".", ""):
            raise RecordError(f"{rtype} target is empty")
        return absolute(normalize_name(text)) if text != "." else "."
    if rtype == "MX":
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit() or not 0 <= int(parts[0]) <= 65535:
            raise RecordError(f"{text!r} is not 'preference target' (for example '10 mail.example.com')")
        target = "." if parts[1] == "." else absolute(normalize_name(parts[1]))
        return f"{int(parts[0])} {target}"
    raise RecordError(f"type {rtype!r} is not supported (supported: {', '.join(SUPPORTED_TYPES)})")


def txt_tag(value: str) -> str | None:
    """The record kind a TXT value declares (``v=spf1`` …), lower-case; None for free text."""
    head = value.lstrip().split(";", 1)[0].split(" ", 1)[0].strip().lower()
    return head if head in TXT_TAGS else None


def slot_of(rtype: str, value: str) -> str:
    """The ownership slot of a value within its RRset (see the module docstring)."""
    if rtype != "TXT":
        return ""
    return txt_tag(value) or "=" + value


def slot_key(name: str, rtype: str, slot: str) -> str:
    return f"{name}|{rtype}|{slot}"


def parse_slot_key(key: str) -> tuple[str, str, str]:
    name, rtype, slot = key.split("|", 2)
    return name, rtype, slot


@dataclass(frozen=True, order=True)
class Record:
    """One RRset we want; ``not_after`` (ISO-8601 UTC) retires it automatically, used for DKIM rotation."""

    name: str
    type: str
    ttl: int
    values: tuple[str, ...]
    not_after: str | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.type)

    def slots(self) -> dict[str, tuple[str, ...]]:
        """Slot key → the values of this record in that slot."""
        grouped: dict[str, list[str]] = {}
        for value in self.values:
            grouped.setdefault(slot_key(self.name, self.type, slot_of(self.type, value)), []).append(value)
        return {key: tuple(values) for key, values in grouped.items()}

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "ttl": self.ttl,
            "values": list(self.values),
        }
        if self.not_after:
            data["not_after"] = self.not_after
        return data

    @classmethod
    def make(
        cls, name: str, rtype: str, ttl: int, values: Iterable[Any], not_after: str | None = None
    ) -> Record:
        """Build a record in canonical form; raises :class:`RecordError` naming the record and the reason."""
        rtype = str(rtype).upper()
        try:
            name = normalize_name(name)
        except RecordError as exc:
            raise RecordError(f"{name} {rtype}: {exc}") from None
        if rtype not in SUPPORTED_TYPES:
            raise RecordError(
                f"{name} {rtype}: type is not supported (supported: {', '.join(SUPPORTED_TYPES)})"
            )
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or int(ttl) != ttl:
            raise RecordError(f"{name} {rtype}: ttl {ttl!r} is not a whole number of seconds")
        if not MIN_TTL <= int(ttl) <= MAX_TTL:
            raise RecordError(f"{name} {rtype}: ttl {ttl} is outside {MIN_TTL}..{MAX_TTL} seconds")
        canonical: set[str] = set()
        for value in values:
            try:
                canonical.add(canonical_value(rtype, value))
            except RecordError as exc:
                raise RecordError(f"{name} {rtype}: {exc}") from None
        if not canonical:
            raise RecordError(f"{name} {rtype}: no values")
        if not_after is not None:
            parse_time(not_after, f"{name} {rtype}: not_after")
        return cls(name, rtype, int(ttl), tuple(sorted(canonical)), not_after)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], default_ttl: int = 3600) -> Record:
        if not isinstance(data, Mapping):
            raise RecordError(f"record {data!r} is not a mapping with name, type, ttl and values")
        missing = [key for key in ("name", "type", "values") if key not in data]
        if missing:
            raise RecordError(f"record {dict(data)!r} lacks {', '.join(missing)}")
        values = data["values"]
        if isinstance(values, str) or not isinstance(values, Iterable):
            raise RecordError(f"{data['name']} {data['type']}: values must be a list of strings")
        ttl = data.get("ttl")
        return cls.make(
            data["name"],
            data["type"],
            default_ttl if ttl is None else ttl,
            list(values),
            data.get("not_after"),
        )


def parse_time(text: str, what: str = "time") -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise RecordError(f"{what} {text!r} is not an ISO-8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def expired(record: Record, now: dt.datetime) -> bool:
    return record.not_after is not None and parse_time(record.not_after) <= now


def merge(records: Iterable[Record]) -> list[Record]:
    """One record per (name, type), sorted; raises :class:`RecordError` when TTLs of one RRset disagree."""
    merged: dict[tuple[str, str], Record] = {}
    for record in records:
        other = merged.get(record.key)
        if other is None:
            merged[record.key] = record
            continue
        if other.ttl != record.ttl:
            raise RecordError(
                f"{record.name} {record.type}: declared twice with TTLs {other.ttl} and {record.ttl} "
                "(one RRset has one TTL)"
            )
        not_after = other.not_after if other.not_after == record.not_after else None
        values = tuple(sorted(set(other.values) | set(record.values)))
        merged[record.key] = Record(record.name, record.type, record.ttl, values, not_after)
    return [merged[key] for key in sorted(merged)]


def owner_domain(name: str) -> str:
    """The mail domain a record serves (``_dmarc.acme.test`` → ``acme.test``), for messages."""
    for prefix in ("_dmarc.", "_mta-sts.", "mta-sts.", "_smtp._tls."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    if "._domainkey." in name:
        return name.split("._domainkey.", 1)[1]
    if "._report._dmarc." in name:
        return name.split("._report._dmarc.", 1)[0]
    return name


def reverse_name(ip: str) -> str:
    return dns.name.from_text(ipaddress.ip_address(ip).reverse_pointer).to_text(omit_final_dot=True).lower()


def zone_for(name: str, zones: Iterable[str]) -> str | None:
    """The most specific zone that contains ``name``."""
    matches = [zone for zone in zones if in_zone(name, zone)]
    return max(matches, key=len, default=None)


def is_valid_name(name: str) -> bool:
    try:
        normalize_name(name)
    except (RecordError, dns.exception.DNSException):
        return False
    return True
