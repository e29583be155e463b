"""DMARC per RFC 9989 (DMARCbis): build the ``_dmarc`` record and check its tags.

Generated records use only DMARCbis tags: ``t=y`` replaces ``pct`` for testing, ``np`` sets the policy
for non-existent subdomains, ``psd`` marks (or denies) a public suffix domain. Records found in DNS may
still carry the RFC 7489 tags that DMARCbis removed (``pct``, ``rf``, ``ri``) or a report size limit
(``!10m``): receivers ignore them, so they are warnings, not errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

POLICIES = ("none", "quarantine", "reject")
_URI_RE = re.compile(
    r"^(mailto:[^@\s,;!]+@[a-z0-9.-]+\.[a-z]{2,}|https://[^\s,;!]+)(![0-9]+[kmgt]?)?$", re.IGNORECASE
)
# RFC 9989 section 4.7.
KNOWN_TAGS = ("v", "p", "sp", "np", "psd", "t", "adkim", "aspf", "rua", "ruf", "fo")
# RFC 7489 tags removed by RFC 9989, and what to do instead.
LEGACY_TAGS = {
    "pct": "use t=y while testing a policy (pct was removed in RFC 9989)",
    "rf": "reports are always AFRF (rf was removed in RFC 9989)",
    "ri": "aggregate reports are daily (ri was removed in RFC 9989)",
}


@dataclass(frozen=True)
class DmarcCheck:
    """A parsed record: its tags, what makes it invalid (errors) and what is merely outdated (warnings)."""

    tags: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def is_dmarc(text: str) -> bool:
    return text.replace(" ", "").lower().startswith("v=dmarc1")


def build_dmarc(
    policy: str,
    rua: Iterable[str] = (),
    ruf: Iterable[str] = (),
    subdomain_policy: str | None = None,
    adkim: str = "r",
    aspf: str = "r",
    *,
    np: str | None = None,
    psd: str | None = None,
    testing: bool = False,
) -> str:
    """The ``_dmarc`` TXT value; tags at their defaults (adkim/aspf=r, t=n) are left out."""
    parts = ["v=DMARC1", f"p={policy}"]
    if subdomain_policy:
        parts.append(f"sp={subdomain_policy}")
    if np:
        parts.append(f"np={np}")
    if psd:
        parts.append(f"psd={psd}")
    if adkim != "r":
        parts.append(f"adkim={adkim}")
    if aspf != "r":
        parts.append(f"aspf={aspf}")
    if testing:
        parts.append("t=y")
    rua, ruf = list(rua), list(ruf)
    if rua:
        parts.append("rua=" + ",".join(rua))
    if ruf:
        parts.append("ruf=" + ",".join(ruf))
        parts.append("fo=1")
    return "; ".join(parts)


def check_dmarc(text: str) -> DmarcCheck:
    """Every error and every warning of one record; no errors means receivers will apply it."""
    errors: list[str] = []
    warnings: list[str] = []
    tags: dict[str, str] = {}
    pieces = [piece.strip() for piece in text.split(";")]
    if pieces and pieces[-1] == "":
        pieces.pop()
    for position, piece in enumerate(pieces):
        name, sep, value = piece.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not sep or not name:
            errors.append(f"'{piece}' is not tag=value")
            continue
        if position == 0 and name != "v":
            errors.append("the first tag must be v=DMARC1")
        if name in tags:
            errors.append(f"tag '{name}' appears more than once")
            continue
        tags[name] = value
        if name in LEGACY_TAGS:
            warnings.append(f"{name}={value}: {LEGACY_TAGS[name]}")
        elif name not in KNOWN_TAGS:
            errors.append(f"unknown tag '{name}' (known: {', '.join(KNOWN_TAGS)})")
    errors.extend(_check_values(tags))
    for name in ("rua", "ruf"):
        for uri in filter(None, (u.strip() for u in tags.get(name, "").split(","))):
            if "!" in uri:
                warnings.append(f"{name}: the size limit in {uri!r} is ignored since RFC 9989")
    return DmarcCheck(tags, errors, warnings)


def parse_dmarc(text: str) -> tuple[dict[str, str], list[str]]:
    """The tags and every problem found; an empty problem list means the record is valid."""
    result = check_dmarc(text)
    return result.tags, result.errors


def _check_values(tags: dict[str, str]) -> list[str]:
    errors = []
    if tags.get("v") != "DMARC1":
        errors.append(f"v must be exactly DMARC1 (got {tags.get('v')!r})")
    if "p" not in tags:
        errors.append("the policy tag p= is missing (none, quarantine or reject)")
    for name in ("p", "sp", "np"):
        if name in tags and tags[name].lower() not in POLICIES:
            errors.append(f"{name}={tags[name]} is not one of {', '.join(POLICIES)}")
    for name in ("adkim", "aspf"):
        if name in tags and tags[name].lower() not in ("r", "s"):
            errors.append(f"{name}={tags[name]} must be r (relaxed) or s (strict)")
    if "pct" in tags and not (tags["pct"].isdigit() and 0 <= int(tags["pct"]) <= 100):
        errors.append(f"pct={tags['pct']} must be a whole number from 0 to 100")
    if "ri" in tags and not (tags["ri"].isdigit() and int(tags["ri"]) < 2**32):
        errors.append(f"ri={tags['ri']} must be a whole number of seconds")
    if "fo" in tags:
        options = tags["fo"].split(":")
        if not all(option in ("0", "1", "d", "s") for option in options):
            errors.append(f"fo={tags['fo']} must be 0, 1, d or s, separated by ':'")
        elif {"0", "1"} <= set(options) or len(options) != len(set(options)):
            errors.append(f"fo={tags['fo']}: 0 and 1 exclude each other and no option may repeat")
    if "rf" in tags and tags["rf"].lower() != "afrf":
        errors.append(f"rf={tags['rf']} must be afrf")
    if "psd" in tags and tags["psd"].lower() not in ("y", "n", "u"):
        errors.append(f"psd={tags['psd']} must be y, n or u")
    if "t" in tags and tags["t"].lower() not in ("y", "n"):
        errors.append(f"t={tags['t']} must be y or n")
    for name in ("rua", "ruf"):
        if name in tags:
            for uri in tags[name].split(","):
                if not _URI_RE.match(uri.strip()):
                    errors.append(f"{name}: {uri.strip()!r} is not a mailto: or https: report address")
    return errors


def report_addresses(tags: dict[str, str], names: Iterable[str] = ("rua", "ruf")) -> list[str]:
    """The ``mailto:`` addresses (without scheme and size limit) of the given tags, in order."""
    found = []
    for name in names:
        for uri in tags.get(name, "").split(","):
            uri = uri.strip().split("!")[0]
            if uri.lower().startswith("mailto:") and "@" in uri:
                address = uri[len("mailto:") :]
                if address not in found:
                    found.append(address)
    return found


def report_domains(tags: dict[str, str]) -> list[str]:
    """Domains receiving reports (for the RFC 9989 external-destination authorisation record)."""
    return sorted({address.rsplit("@", 1)[1].lower().rstrip(".") for address in report_addresses(tags)})


def needs_authorization(domain: str, destination: str) -> bool:
    """Whether reports for ``domain`` sent to ``destination`` need ``<domain>._report._dmarc.<destination>``.

    RFC 9989 asks for it when the two lie in different organizational domains. Without the public suffix
    list we count a destination that is the domain, a parent or a child of it as the same organization.
    """
    domain, destination = domain.lower().rstrip("."), destination.lower().rstrip(".")
    return not (
        domain == destination or domain.endswith("." + destination) or destination.endswith("." + domain)
    )


def authorization_name(domain: str, destination: str) -> str:
    return f"{domain}._report._dmarc.{destination}"
