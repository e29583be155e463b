"""Mail-zone validators in the octoDNS manner: small named checks, every reason collected, raised once.

Each reason names the mail domain and the record (``acme.test: _dmarc.acme.test TXT (DMARC): …``). The
records being planned count as present (a name published in the same run resolves), names outside the
plan go to the configured resolver, which callers inject (a :class:`~modules.dns.lookup.StaticLookup` in
unit tests, so they need no network).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from modules.dns import dkim, dmarc, mailauth, spf
from modules.dns.errors import DnsValidationError
from modules.dns.lookup import CachingLookup, Lookup, OverlayLookup, StaticLookup
from modules.dns.records import Record, in_zone, owner_domain, txt_tag

PLACEHOLDER = {"A": "192.0.2.1", "AAAA": "2001:db8::1"}
_KIND = {
    "v=spf1": "SPF",
    "v=dmarc1": "DMARC",
    "v=dkim1": "DKIM",
    "v=stsv1": "MTA-STS",
    "v=tlsrptv1": "TLS-RPT",
}


def planned_lookup(records: Iterable[Record], present: Iterable[tuple[str, str]] = ()) -> StaticLookup:
    """The plan as a lookup table; ``present`` adds (name, type) pairs whose values are not known yet."""
    table = StaticLookup()
    for record in records:
        table.add(record.name, record.type, record.values)
    for name, rtype in present:
        table.add(name, rtype, [PLACEHOLDER.get(rtype, "")] if rtype in PLACEHOLDER else [])
    return table


def _reason(record: Record, message: str, kind: str | None = None) -> str:
    label = f"{record.type} ({kind})" if kind else record.type
    return f"{owner_domain(record.name)}: {record.name} {label}: {message}"


def check_zone_membership(records: list[Record], zones: list[str]) -> list[str]:
    if not zones:
        return []
    return [
        _reason(r, f"is in none of the zones {', '.join(zones)}")
        for r in records
        if not any(in_zone(r.name, z) for z in zones)
    ]


def check_cnames(
    records: list[Record], zones: list[str], present: Iterable[tuple[str, str]] = ()
) -> list[str]:
    """No CNAME at a zone apex, none beside other data at its name, and exactly one target."""
    reasons = []
    types_at: dict[str, set[str]] = defaultdict(set)
    for record in records:
        types_at[record.name].add(record.type)
    for name, rtype in present:
        types_at[name].add(rtype)
    for record in (r for r in records if r.type == "CNAME"):
        if record.name in zones:
            reasons.append(_reason(record, "a CNAME cannot sit at the zone apex (it would hide SOA and NS)"))
        others = sorted(types_at[record.name] - {"CNAME"})
        if others:
            reasons.append(_reason(record, f"a CNAME cannot sit beside other records ({', '.join(others)})"))
        if len(record.values) != 1:
            reasons.append(_reason(record, f"a CNAME has exactly one target, not {len(record.values)}"))
    return reasons


def check_mx(records: list[Record], lookup: Lookup) -> list[str]:
    """MX targets must have A/AAAA records and must not be aliases (RFC 2181 10.3); null MX stands alone."""
    reasons = []
    for record in (r for r in records if r.type == "MX"):
        targets = [value.split()[1] for value in record.values]
        if "." in targets:
            if len(targets) > 1:
                reasons.append(_reason(record, "a null MX ('0 .') must be the only MX of its name"))
            continue
        for target in targets:
            host = target.rstrip(".")
            answers = [lookup(host, rdtype) for rdtype in ("A", "AAAA")]
            if any(a.cname_chain for a in answers):
                reasons.append(_reason(record, f"MX target {host} is a CNAME; it must have its own A record"))
            elif not any(a.ok for a in answers):
                failed = next((a.reason for a in answers if a.status == "error"), "")
                why = f"lookup failed: {failed}" if failed else "it has no A or AAAA record"
                reasons.append(_reason(record, f"MX target {host} does not resolve to an address ({why})"))
    return reasons


def check_txt(
    records: list[Record], lookup: Lookup, min_dkim_bits: int = dkim.MIN_BITS, check_reports: bool = True
) -> list[str]:
    reasons = []
    for record in (r for r in records if r.type == "TXT"):
        by_tag: dict[str | None, list[str]] = defaultdict(list)
        for value in record.values:
            by_tag[txt_tag(value)].append(value)
        is_dkim_name = "._domainkey." in record.name
        for tag, values in by_tag.items():
            kind = _KIND.get(tag or "", "DKIM" if is_dkim_name else None)
            if kind and len(values) > 1:
                reasons.append(
                    _reason(record, f"{len(values)} {kind} records at one name; exactly one is allowed", kind)
                )
            for value in values:
                reasons += [
                    _reason(record, problem, kind)
                    for problem in _check_txt_value(record, kind, value, lookup, min_dkim_bits, check_reports)
                ]
    return reasons


def _check_txt_value(
    record: Record, kind: str | None, value: str, lookup: Lookup, min_bits: int, check_reports: bool = True
) -> list[str]:
    name = record.name
    if kind == "SPF":
        count = spf.count_lookups(name, value, lookup)
        return count.errors + count.verdicts()
    if kind == "DMARC" and "._report._dmarc." in name:
        # RFC 7489 7.1: the report receiver's consent to take reports for another domain.
        return [] if dmarc.is_dmarc(value) else ["an external report authorisation must start with v=DMARC1"]
    if kind == "DMARC":
        if not name.startswith("_dmarc."):
            return ["a DMARC record must be published at _dmarc.<domain>", *dmarc.parse_dmarc(value)[1]]
        tags, problems = dmarc.parse_dmarc(value)
        if not check_reports:
            return problems
        return problems + report_problems(name.removeprefix("_dmarc."), tags, lookup)
    if kind == "DKIM":
        problems = (
            []
            if "._domainkey." in name
            else ["a DKIM key must be published at <selector>._domainkey.<domain>"]
        )
        return problems + dkim.validate_dkim(value, min_bits)
    if kind == "MTA-STS":
        problems = [] if name.startswith("_mta-sts.") else ["an MTA-STS record must be at _mta-sts.<domain>"]
        return problems + mailauth.validate_sts_txt(value)
    if kind == "TLS-RPT":
        problems = (
            [] if name.startswith("_smtp._tls.") else ["a TLS-RPT record must be at _smtp._tls.<domain>"]
        )
        problems += mailauth.validate_tls_rpt_txt(value)
        if not check_reports:
            return problems
        rua = next((t.split("=", 1)[1] for t in map(str.strip, value.split(";")) if t.startswith("rua=")), "")
        return problems + report_problems(name.removeprefix("_smtp._tls."), {"rua": rua}, lookup, "TLS-RPT")
    return []


def report_problems(domain: str, tags: dict[str, str], lookup: Lookup, kind: str = "DMARC") -> list[str]:
    """Report addresses must be deliverable (MX, else an address record: RFC 5321 5.1) and, for DMARC
    reports to another organization, authorised by ``<domain>._report._dmarc.<destination>``."""
    problems = []
    for name in ("rua", "ruf"):
        for address in dmarc.report_addresses(tags, [name]):
            destination = address.rsplit("@", 1)[1].lower().rstrip(".")
            if not any(lookup(destination, rdtype).ok for rdtype in ("MX", "A", "AAAA")):
                problems.append(
                    f"{name} mailto:{address}: {destination} has no MX (nor A/AAAA) record, "
                    "so reports cannot be delivered"
                )
            elif kind == "DMARC" and dmarc.needs_authorization(domain, destination):
                auth = dmarc.authorization_name(domain, destination)
                if not any(dmarc.is_dmarc(v) for v in lookup(auth, "TXT").values):
                    problems.append(
                        f"{name} mailto:{address}: {destination} has not authorised reports for {domain} "
                        f"({auth} TXT v=DMARC1 is missing)"
                    )
    return problems


def check_ptr(records: list[Record]) -> list[str]:
    return [
        _reason(r, "a PTR record belongs under in-addr.arpa or ip6.arpa")
        for r in records
        if r.type == "PTR" and not (r.name.endswith(".in-addr.arpa") or r.name.endswith(".ip6.arpa"))
    ]


def validate_records(
    records: Iterable[Record],
    lookup: Lookup | None = None,
    *,
    zones: Iterable[str] = (),
    present: Iterable[tuple[str, str]] = (),
    min_dkim_bits: int = dkim.MIN_BITS,
    check_reports: bool = True,
) -> list[str]:
    """Every problem of a planned record set; ``lookup`` resolves names the plan does not hold.

    ``check_reports=False`` skips the deliverability of report addresses: for one zone's record set,
    whose report domain may be published by another record set of the same run (the program checks all
    zones together first, and verification checks the live records).
    """
    records, zones, present = list(records), list(zones), list(present)
    resolver = CachingLookup(OverlayLookup(planned_lookup(records, present), lookup))
    reasons = check_zone_membership(records, zones)
    reasons += check_cnames(records, zones, present)
    reasons += check_mx(records, resolver)
    reasons += check_txt(records, resolver, min_dkim_bits, check_reports)
    reasons += check_ptr(records)
    return reasons


def ensure_valid(records: Iterable[Record], subject: str, lookup: Lookup | None = None, **kwargs) -> None:
    """Raise one :class:`DnsValidationError` listing every reason, or return quietly."""
    reasons = validate_records(records, lookup, **kwargs)
    if reasons:
        raise DnsValidationError(subject, reasons)
