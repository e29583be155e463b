"""MTA-STS (RFC 8461) and SMTP TLS reporting (RFC 8460): policy text, TXT records and their checks.

The ``_mta-sts`` record carries an id that must change whenever the policy changes; we derive it from
the policy text itself, so a changed MX list or mode changes the id and nothing else does.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

STS_MODES = ("enforce", "testing", "none")
_STS_ID_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")
_TLSRPT_URI_RE = re.compile(r"^(mailto:[^@\s,;]+@[a-z0-9.-]+\.[a-z]{2,}|https://\S+)$", re.IGNORECASE)


def mta_sts_policy(mode: str, mx_hosts: Iterable[str], max_age: int) -> str:
    """The policy file served at ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (CRLF lines)."""
    lines = ["version: STSv1", f"mode: {mode}"]
    lines += [f"mx: {host.rstrip('.')}" for host in mx_hosts]
    lines.append(f"max_age: {max_age}")
    return "\r\n".join(lines) + "\r\n"


def sts_id(policy: str) -> str:
    """The ``id`` of the ``_mta-sts`` record for this policy text: any change to the text changes it."""
    return hashlib.sha256(policy.encode()).hexdigest()[:20]


def mta_sts_txt(policy: str) -> str:
    return f"v=STSv1; id={sts_id(policy)}"


def sts_txt_id(text: str) -> str | None:
    """The ``id`` tag of a ``_mta-sts`` TXT value (None when it has none)."""
    pairs, _ = _tags(text)
    return dict(pairs).get("id")


STS_MAX_AGE_LIMIT = 31557600  # RFC 8461 3.2: at most about one year
_MX_PATTERN_RE = re.compile(
    r"^(\*\.)?(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
)


@dataclass(frozen=True)
class StsPolicy:
    """A parsed policy file (RFC 8461 3.2)."""

    version: str
    mode: str
    mx: tuple[str, ...]
    max_age: int


def parse_sts_policy(text: str) -> tuple[StsPolicy | None, list[str]]:
    """Parse a policy file; return the policy and every problem (the policy is None when there are any).

    Lines end in CRLF or LF, each ``key: value``; unknown keys are ignored (RFC 8461 3.2), a repeated
    ``version``/``mode``/``max_age`` is an error, ``mx`` may repeat and is needed unless mode is none.
    """
    fields: dict[str, str] = {}
    mx: list[str] = []
    problems: list[str] = []
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            problems.append(f"line {number} is not 'key: value'")
            continue
        if key == "mx":
            pattern = value.lower().rstrip(".")
            if not _MX_PATTERN_RE.match(pattern):
                problems.append(f"mx: {value!r} is not a host name or a *.<domain> pattern")
            mx.append(pattern)
        elif key in ("version", "mode", "max_age"):
            if key in fields:
                problems.append(f"{key} appears more than once")
            fields[key] = value
    if fields.get("version") != "STSv1":
        problems.append(f"version must be STSv1 (got {fields.get('version', 'none')!r})")
    mode = fields.get("mode", "")
    if mode not in STS_MODES:
        problems.append(f"mode must be one of {', '.join(STS_MODES)} (got {mode or 'none'!r})")
    max_age_text = fields.get("max_age", "")
    max_age = int(max_age_text) if max_age_text.isdigit() and len(max_age_text) <= 10 else -1
    if not 0 <= max_age <= STS_MAX_AGE_LIMIT:
        problems.append(
            f"max_age must be a whole number of seconds up to {STS_MAX_AGE_LIMIT} (got {max_age_text!r})"
        )
    if not mx and mode in ("enforce", "testing"):
        problems.append(f"mode {mode} needs at least one mx: line")
    if problems:
        return None, problems
    return StsPolicy("STSv1", mode, tuple(mx), max_age), []


def mx_matches(host: str, pattern: str) -> bool:
    """Whether an MX host matches a policy ``mx:`` pattern (RFC 8461 4.1).

    Case-insensitive, trailing dots ignored; ``*.example.com`` stands for exactly one leftmost label, so it
    matches ``mx1.example.com`` but neither ``example.com`` nor ``a.b.example.com``.
    """
    host, pattern = host.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return host == pattern


def tls_rpt_txt(rua: Iterable[str]) -> str:
    return "v=TLSRPTv1; rua=" + ",".join(rua)


def _tags(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    pairs, errors = [], []
    for piece in (p.strip() for p in text.split(";")):
        if not piece:
            continue
        name, sep, value = piece.partition("=")
        if not sep:
            errors.append(f"'{piece}' is not tag=value")
            continue
        pairs.append((name.strip(), value.strip()))
    return pairs, errors


def validate_sts_txt(text: str) -> list[str]:
    pairs, errors = _tags(text)
    tags = dict(pairs)
    if not pairs or pairs[0] != ("v", "STSv1"):
        errors.append("must start with v=STSv1")
    if not _STS_ID_RE.match(tags.get("id", "")):
        errors.append("id= must be 1-32 letters or digits")
    return errors


def validate_tls_rpt_txt(text: str) -> list[str]:
    pairs, errors = _tags(text)
    tags = dict(pairs)
    if not pairs or pairs[0] != ("v", "TLSRPTv1"):
        errors.append("must start with v=TLSRPTv1")
    rua = tags.get("rua", "")
    if not rua:
        errors.append("rua= is missing (where TLS reports go)")
    for uri in filter(None, (u.strip() for u in rua.split(","))):
        if not _TLSRPT_URI_RE.match(uri):
            errors.append(f"rua: {uri!r} is not a mailto: or https: address")
    return errors
