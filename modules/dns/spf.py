"""SPF (RFC 7208): build the record, check its syntax, count its DNS lookups, evaluate it for an IP.

Lookup counting follows checkdmarc, taking the stricter side where checkdmarc and the RFC differ:
``include``, ``a``, ``mx``, ``ptr``, ``exists`` and ``redirect`` cost one lookup each; an include or a
redirect adds every lookup of the record it points to, recursively; each MX target's address lookup
costs one more (checkdmarc); ``ptr`` counts (RFC; checkdmarc does not) and a domain included twice is
counted twice (an evaluator does the work twice; checkdmarc counts it once). Lookups that find nothing
are *void*: more than 2 is a permanent error, as is more than 10 lookups in total.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from modules.dns.lookup import NXDOMAIN, Answer, Lookup

LOOKUP_LIMIT = 10
VOID_LIMIT = 2
MX_TARGET_LIMIT = 10
# Bounds the work of counting a pathological tree (each include can fan out): far past any verdict.
_WORK_LIMIT = 200
MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MECHANISM_RE = re.compile(r"^([+\-~?]?)([a-z0-9]+)(.*)$", re.IGNORECASE)
_MODIFIER_RE = re.compile(r"^([a-z][a-z0-9_.\-]*)=(.*)$", re.IGNORECASE)
_MACRO_RE = re.compile(r"%(?:\{[slodiphcrtv]\d*r?[.\-+,/_=]*\}|%|_|-)", re.IGNORECASE)
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$", re.IGNORECASE)
_TOPLABEL_RE = re.compile(r"^(?=.*[a-z])[a-z0-9-]+$", re.IGNORECASE)


@dataclass(frozen=True)
class Term:
    """One term: a mechanism (``qualifier`` set) or a modifier (``modifier`` True)."""

    raw: str
    name: str
    qualifier: str = "+"
    target: str = ""  # domain-spec, IP network or modifier value
    cidr4: int | None = None
    cidr6: int | None = None
    modifier: bool = False


@dataclass
class SpfRecord:
    terms: list[Term] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def mechanisms(self) -> list[Term]:
        return [t for t in self.terms if not t.modifier]

    def modifier(self, name: str) -> Term | None:
        return next((t for t in self.terms if t.modifier and t.name == name), None)


def is_spf(text: str) -> bool:
    """RFC 7208 4.5: exactly ``v=spf1`` followed by a space or the end."""
    lowered = text.lower()
    return lowered == "v=spf1" or lowered.startswith("v=spf1 ")


def build_spf(
    ipv4: list[str] = (), ipv6: list[str] = (), includes: list[str] = (), all_qualifier: str = "~"
) -> str:
    """The record for a sending domain: its IPs, optional includes, then ``~all`` or ``-all``."""
    terms = ["v=spf1"]
    terms += [f"ip4:{ip}" for ip in ipv4]
    terms += [f"ip6:{ip}" for ip in ipv6]
    terms += [f"include:{domain}" for domain in includes]
    terms.append(f"{all_qualifier}all")
    return " ".join(terms)


def valid_domain_spec(spec: str) -> str | None:
    """None when ``spec`` is a usable domain-spec, else the reason."""
    if not spec:
        return "the domain is missing"
    if "%" in spec:
        rest = _MACRO_RE.sub("", spec)
        if "%" in rest:
            return f"{spec!r} has an invalid macro"
        return None
    labels = spec.rstrip(".").split(".")
    if len(labels) < 2:
        return f"{spec!r} is not a fully qualified domain name"
    if not all(_LABEL_RE.match(label) for label in labels):
        return f"{spec!r} is not a valid domain name"
    if not _TOPLABEL_RE.match(labels[-1]):
        return f"{spec!r} does not end in a valid top label"
    return None


def _cidrs(text: str) -> tuple[str, int | None, int | None, str | None]:
    """Split ``domain/24//64`` into (domain, cidr4, cidr6, error)."""
    cidr4 = cidr6 = None
    if "//" in text:
        text, _, six = text.partition("//")
        if not six.isdigit() or not 0 <= int(six) <= 128:
            return text, None, None, f"'//{six}' is not an IPv6 prefix length (0-128)"
        cidr6 = int(six)
    if "/" in text:
        text, _, four = text.partition("/")
        if not four.isdigit() or not 0 <= int(four) <= 32:
            return text, None, None, f"'/{four}' is not an IPv4 prefix length (0-32)"
        cidr4 = int(four)
    return text, cidr4, cidr6, None


def parse_spf(text: str) -> SpfRecord:
    """Parse and check the syntax; every problem is collected in ``errors`` (empty means valid)."""
    record = SpfRecord()
    if not is_spf(text):
        record.errors.append("does not start with 'v=spf1' followed by a space")
        return record
    if any(ch in text for ch in "\t\r\n"):
        record.errors.append("terms must be separated by spaces (found a tab or a line break)")
    seen_all = False
    for raw in text.split()[1:]:
        if seen_all:
            record.errors.append(f"'{raw}' comes after 'all' and is never evaluated")
            continue
        term, error = _parse_term(raw)
        if error:
            record.errors.append(f"'{raw}': {error}")
            continue
        assert term is not None
        if term.modifier and term.name in ("redirect", "exp") and record.modifier(term.name):
            record.errors.append(f"'{raw}': {term.name}= appears more than once")
        record.terms.append(term)
        seen_all = term.name == "all" and not term.modifier
    if seen_all and record.modifier("redirect"):
        record.errors.append("redirect= is ignored when the record has an 'all' mechanism")
    return record


def _parse_term(raw: str) -> tuple[Term | None, str | None]:
    modifier = _MODIFIER_RE.match(raw)
    if modifier:
        name, value = modifier.group(1).lower(), modifier.group(2)
        if name in ("redirect", "exp"):
            error = valid_domain_spec(value)
            if error:
                return None, error
        return Term(raw, name, target=value, modifier=True), None
    match = _MECHANISM_RE.match(raw)
    if not match:
        return None, "is neither a mechanism nor a modifier"
    qualifier, name, rest = match.group(1) or "+", match.group(2).lower(), match.group(3)
    if name not in MECHANISMS:
        return None, f"unknown mechanism '{name}' (known: {', '.join(MECHANISMS)})"
    if name == "all":
        return (Term(raw, name, qualifier), None) if not rest else (None, "'all' takes no argument")
    if name in ("ip4", "ip6"):
        if not rest.startswith(":"):
            return (
                None,
                f"{name} needs an address, as in {name}:{'192.0.2.1' if name == 'ip4' else '2001:db8::1'}",
            )
        try:
            network = ipaddress.ip_network(rest[1:], strict=False)
        except ValueError:
            return None, f"{rest[1:]!r} is not an IP{name[-1]} address or network"
        if network.version != int(name[-1]):
            return None, f"{rest[1:]!r} is an IPv{network.version} address, not IPv{name[-1]}"
        return Term(raw, name, qualifier, rest[1:]), None
    if name == "ptr":
        return None, "ptr is deprecated and slow (RFC 7208 5.5); list the addresses instead"
    if name in ("include", "exists"):
        if not rest.startswith(":"):
            return None, f"{name} needs a domain, as in {name}:_spf.example.com"
        error = valid_domain_spec(rest[1:])
        return (None, error) if error else (Term(raw, name, qualifier, rest[1:].rstrip(".").lower()), None)
    # a and mx: optional :domain, optional dual CIDR.
    target, cidr4, cidr6, error = _cidrs(rest)
    if error:
        return None, error
    if target:
        if not target.startswith(":"):
            return None, f"unexpected {target!r} after {name}"
        target = target[1:]
        error = valid_domain_spec(target)
        if error:
            return None, error
    return Term(raw, name, qualifier, target.rstrip(".").lower(), cidr4, cidr6), None


@dataclass
class LookupCount:
    """The DNS cost of evaluating a record; ``errors`` holds every problem met on the way."""

    lookups: int = 0
    void_lookups: int = 0
    errors: list[str] = field(default_factory=list)
    breakdown: list[tuple[str, int]] = field(default_factory=list)

    def verdicts(self) -> list[str]:
        """The limit violations, with where the lookups come from."""
        problems = []
        if self.lookups > LOOKUP_LIMIT:
            detail = ", ".join(f"{term} {cost}" for term, cost in self.breakdown if cost)
            problems.append(
                f"needs {self.lookups} DNS lookups, more than the limit of {LOOKUP_LIMIT} "
                f"(RFC 7208 4.6.4; counted through nested includes: {detail})"
            )
        if self.void_lookups > VOID_LIMIT:
            problems.append(
                f"has {self.void_lookups} void lookups (names with no records), "
                f"more than the limit of {VOID_LIMIT}"
            )
        return problems


def spf_records_at(domain: str, lookup: Lookup) -> tuple[Answer, list[str]]:
    answer = lookup(domain, "TXT")
    return answer, [value for value in answer.values if is_spf(value)] if answer.ok else []


def count_lookups(domain: str, text: str, lookup: Lookup) -> LookupCount:
    """Count the lookups and void lookups of ``text`` (published at ``domain``) through nested records."""
    count = LookupCount()
    _count(domain.rstrip(".").lower(), text, lookup, count, (domain.rstrip(".").lower(),), top=True)
    return count


def _count(
    domain: str, text: str, lookup: Lookup, count: LookupCount, stack: tuple[str, ...], top: bool
) -> None:
    record = parse_spf(text)
    where = "" if top else f" (in the SPF record of {domain})"
    count.errors.extend(f"{error}{where}" for error in record.errors)
    for term in record.terms:
        if count.lookups > _WORK_LIMIT:
            return
        before = count.lookups
        if term.modifier and term.name != "redirect":
            continue
        if term.name in ("include", "redirect"):
            count.lookups += 1
            _nested(domain, term, lookup, count, stack)
        elif term.name == "a":
            count.lookups += 1
            target = term.target or domain
            if "%" not in target and not _addresses(target, lookup):
                count.void_lookups += 1
        elif term.name == "mx":
            count.lookups += 1
            target = term.target or domain
            if "%" not in target:
                _count_mx(target, lookup, count, where)
        elif term.name in ("exists", "ptr"):
            count.lookups += 1
        if top:
            count.breakdown.append((term.raw, count.lookups - before))


def _nested(domain: str, term: Term, lookup: Lookup, count: LookupCount, stack: tuple[str, ...]) -> None:
    target = term.target.rstrip(".").lower()
    label = f"{term.name}{':' if term.name == 'include' else '='}{target}"
    if "%" in target:
        return  # a macro: expanded per message, cannot be followed here (checkdmarc counts it as 1 too)
    if target in stack:
        count.errors.append(f"{label} loops back: {' → '.join((*stack, target))}")
        return
    answer, found = spf_records_at(target, lookup)
    if not answer.ok and not answer.void:
        count.errors.append(f"{label}: lookup failed: {answer.reason}")
        return
    if not found:
        count.void_lookups += 1
        missing = "does not exist" if answer.status == NXDOMAIN else "has no SPF record"
        count.errors.append(f"{label}: {target} {missing} (a permanent error for receivers)")
        return
    if len(found) > 1:
        count.errors.append(f"{label}: {target} publishes {len(found)} SPF records (exactly one is allowed)")
        return
    _count(target, found[0], lookup, count, (*stack, target), top=False)


def _count_mx(target: str, lookup: Lookup, count: LookupCount, where: str) -> None:
    answer = lookup(target, "MX")
    if answer.void:
        count.void_lookups += 1
        return
    if not answer.ok:
        count.errors.append(f"mx:{target}: lookup failed: {answer.reason}{where}")
        return
    hosts = [value.split()[1].rstrip(".") for value in answer.values if len(value.split()) == 2]
    if len(hosts) > MX_TARGET_LIMIT:
        count.errors.append(f"mx:{target}: {len(hosts)} MX hosts, more than {MX_TARGET_LIMIT}{where}")
    for host in hosts[: MX_TARGET_LIMIT + 1]:
        count.lookups += 1
        if host and not _addresses(host, lookup):
            count.void_lookups += 1


def _addresses(name: str, lookup: Lookup) -> list[str]:
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        answer = lookup(name, rdtype)
        if answer.ok:
            found.extend(answer.values)
    return found


@dataclass(frozen=True)
class Evaluation:
    """The result of checking an IP against a domain's SPF: pass, fail, softfail, neutral, none, *error."""

    result: str
    reason: str


def evaluate(domain: str, ip: str, lookup: Lookup) -> Evaluation:
    """A compact ``check_host()`` (RFC 7208 4): enough to tell whether a sending IP is authorised.

    Macros are not expanded (a term with a macro does not match) and ``ptr`` never matches.
    """
    budget = [0]
    return _check_host(ipaddress.ip_address(ip), domain.rstrip(".").lower(), lookup, budget, 0)


def _check_host(ip, domain: str, lookup: Lookup, budget: list[int], depth: int) -> Evaluation:
    answer, found = spf_records_at(domain, lookup)
    if not answer.ok and not answer.void:
        return Evaluation("temperror", f"{domain}: {answer.reason}")
    if not found:
        return Evaluation("none", f"{domain} has no SPF record")
    if len(found) > 1:
        return Evaluation("permerror", f"{domain} publishes {len(found)} SPF records")
    record = parse_spf(found[0])
    if record.errors:
        return Evaluation("permerror", f"{domain}: {record.errors[0]}")
    for term in record.mechanisms:
        if term.name in ("include", "a", "mx", "exists", "ptr"):
            budget[0] += 1
            if budget[0] > LOOKUP_LIMIT:
                return Evaluation("permerror", f"more than {LOOKUP_LIMIT} DNS lookups")
        matched, error = _matches(ip, domain, term, lookup, budget, depth)
        if error is not None:
            return error
        if matched:
            return Evaluation(
                QUALIFIERS[term.qualifier], f"{ip} matches '{term.raw}' in the SPF record of {domain}"
            )
    redirect = record.modifier("redirect")
    if redirect is not None:
        budget[0] += 1
        if depth > LOOKUP_LIMIT or budget[0] > LOOKUP_LIMIT:
            return Evaluation("permerror", f"more than {LOOKUP_LIMIT} DNS lookups")
        result = _check_host(ip, redirect.target.rstrip(".").lower(), lookup, budget, depth + 1)
        return Evaluation("permerror", result.reason) if result.result == "none" else result
    return Evaluation("neutral", f"{ip} matches no mechanism of {domain} and there is no 'all'")


def _in_any(ip, addresses: list[str], cidr4: int | None, cidr6: int | None) -> bool:
    for address in addresses:
        try:
            candidate = ipaddress.ip_address(address)
        except ValueError:
            continue
        if candidate.version != ip.version:
            continue
        prefix = (cidr4 if ip.version == 4 else cidr6) or candidate.max_prefixlen
        if ip in ipaddress.ip_network(f"{candidate}/{prefix}", strict=False):
            return True
    return False


def _matches(ip, domain, term: Term, lookup, budget, depth) -> tuple[bool, Evaluation | None]:
    if term.name == "all":
        return True, None
    if term.name in ("ip4", "ip6"):
        network = ipaddress.ip_network(term.target, strict=False)
        return network.version == ip.version and ip in network, None
    target = term.target or domain
    if "%" in target or term.name == "ptr":
        return False, None
    if term.name == "a":
        return _in_any(ip, _addresses(target, lookup), term.cidr4, term.cidr6), None
    if term.name == "mx":
        answer = lookup(target, "MX")
        hosts = [v.split()[1].rstrip(".") for v in answer.values if len(v.split()) == 2] if answer.ok else []
        return any(_in_any(ip, _addresses(h, lookup), term.cidr4, term.cidr6) for h in hosts[:10]), None
    if term.name == "exists":
        return bool(lookup(target, "A").ok), None
    if term.name == "include":
        if depth > LOOKUP_LIMIT:
            return False, Evaluation("permerror", "include nesting is too deep")
        result = _check_host(ip, target, lookup, budget, depth + 1)
        if result.result == "pass":
            return True, None
        if result.result in ("temperror", "permerror"):
            return False, result
        if result.result == "none":
            return False, Evaluation("permerror", f"include:{target}: {result.reason}")
        return False, None
    return False, None
