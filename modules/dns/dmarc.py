"""DMARC (RFC 7489, with the DMARCbis tags np/psd/t): build the ``_dmarc`` record and check its tags."""

from __future__ import annotations

import re
from collections.abc import Iterable

POLICIES = ("none", "quarantine", "reject")
_URI_RE = re.compile(
    r"^(mailto:[^@\s,;!]+@[a-z0-9.-]+\.[a-z]{2,}|https://[^\s,;!]+)(![0-9]+[kmgt]?)?$", re.IGNORECASE
)
KNOWN_TAGS = ("v", "p", "sp", "np", "adkim", "aspf", "pct", "rua", "ruf", "fo", "rf", "ri", "psd", "t")


def is_dmarc(text: str) -> bool:
    return text.replace(" ", "").lower().startswith("v=dmarc1")


def build_dmarc(
    policy: str,
    rua: Iterable[str] = (),
    ruf: Iterable[str] = (),
    pct: int = 100,
    subdomain_policy: str | None = None,
    adkim: str = "r",
    aspf: str = "r",
) -> str:
    """The ``_dmarc`` TXT value; tags at their defaults (pct=100, adkim/aspf=r) are left out."""
    parts = ["v=DMARC1", f"p={policy}"]
    if subdomain_policy:
        parts.append(f"sp={subdomain_policy}")
    if adkim != "r":
        parts.append(f"adkim={adkim}")
    if aspf != "r":
        parts.append(f"aspf={aspf}")
    if pct != 100:
        parts.append(f"pct={pct}")
    rua, ruf = list(rua), list(ruf)
    if rua:
        parts.append("rua=" + ",".join(rua))
    if ruf:
        parts.append("ruf=" + ",".join(ruf))
        parts.append("fo=1")
    return "; ".join(parts)


def parse_dmarc(text: str) -> tuple[dict[str, str], list[str]]:
    """The tags and every problem found; an empty problem list means the record is valid."""
    errors: list[str] = []
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
        if name not in KNOWN_TAGS:
            errors.append(f"unknown tag '{name}' (known: {', '.join(KNOWN_TAGS)})")
    errors.extend(_check_values(tags))
    return tags, errors


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
    if "fo" in tags and not all(option in ("0", "1", "d", "s") for option in tags["fo"].split(":")):
        errors.append(f"fo={tags['fo']} must be 0, 1, d or s, separated by ':'")
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


def report_domains(tags: dict[str, str]) -> list[str]:
    """Domains receiving reports (for the RFC 7489 7.1 external-destination authorisation record)."""
    domains = []
    for name in ("rua", "ruf"):
        for uri in tags.get(name, "").split(","):
            uri = uri.strip().split("!")[0]
            if uri.lower().startswith("mailto:") and "@" in uri:
                domains.append(uri.rsplit("@", 1)[1].lower().rstrip("."))
    return sorted(set(domains))
