"""MTA-STS (RFC 8461) and SMTP TLS reporting (RFC 8460): policy text, TXT records and their checks.

The ``_mta-sts`` record carries an id that must change whenever the policy changes; we derive it from
the policy text itself, so a changed MX list or mode changes the id and nothing else does.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

STS_MODES = ("enforce", "testing", "none")
_STS_ID_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")
_TLSRPT_URI_RE = re.compile(r"^(mailto:[^@\s,;]+@[a-z0-9.-]+\.[a-z]{2,}|https://\S+)$", re.IGNORECASE)


def mta_sts_policy(mode: str, mx_hosts: Iterable[str], max_age: int) -> str:
    """The policy file served at ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (CRLF lines)."""
    lines = ["version: STSv1", f"mode: {mode}"]
    lines += [f"mx: {host.rstrip('.')}" for host in mx_hosts]
    lines.append(f"max_age: {max_age}")
    return "\r\n".join(lines) + "\r\n"


def mta_sts_txt(policy: str) -> str:
    return f"v=STSv1; id={hashlib.sha256(policy.encode()).hexdigest()[:20]}"


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
