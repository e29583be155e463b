"""The plaintext-secret scan of a stack export: every value that looks like a secret and is not encrypted.

Pulumi keeps a secret as ``{"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270",
"ciphertext": …}``; anything else in the state is plain text that every reader of the state (and every
``stack export``) sees. A value is suspect by its key (password, token, private key…) or by its shape (a PEM
private key, a URL with a password, a TSIG line). The finding names where it is, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

SECRET_SIG = "4dabf18193072939515e22adb298388d"  # noqa: S105 - the engine's secret marker
SECRET_SIG_VALUE = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105
# Key names whose non-empty string values are secrets. Matched on the last path segment, case-insensitive.
SECRET_KEYS = re.compile(
    r"(^|_|-)(password|passwd|passphrase|secret|secret_key|token|api_key|apikey|private_key|private_key_pem"
    r"|cipher_pass|tsig_secret|access_key_secret|secret_access_key)($|_|-)",
    re.IGNORECASE,
)
# Keys that name a secret without holding one (a config key name, a file path, a flag, a digest).
BENIGN_KEYS = re.compile(r"(_file|_path|_env|_var|_name|_sha256|_hash|_set|_len|_length|_keys)$", re.I)
VALUE_PATTERNS = {
    "a PEM private key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    "a URL with a password": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I),
    "a TSIG/DNS key secret": re.compile(r"\bsecret\s+\"[A-Za-z0-9+/=]{16,}\"", re.I),
}


@dataclass(frozen=True)
class Finding:
    urn: str
    path: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"urn": self.urn, "path": self.path, "reason": self.reason}


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_SIG_VALUE


def _walk(value: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    """(path, last key, value) of every leaf outside an encrypted secret."""
    if is_secret(value):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_key(item, f"{path}.{key}" if path else str(key), str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk_key(item, f"{path}[{index}]", path.rsplit(".", 1)[-1])


def _walk_key(value: Any, path: str, key: str) -> Iterator[tuple[str, str, Any]]:
    if isinstance(value, dict | list) and not is_secret(value):
        yield from _walk(value, path)
    elif not is_secret(value):
        yield path, key, value


def scan_value(urn: str, where: str, value: Any) -> list[Finding]:
    findings = []
    for path, key, leaf in _walk(value, where):
        if not isinstance(leaf, str) or not leaf.strip():
            continue
        if SECRET_KEYS.search(key) and not BENIGN_KEYS.search(key):
            findings.append(Finding(urn, path, f"key {key!r} holds a plaintext value (not a Pulumi secret)"))
            continue
        for reason, pattern in VALUE_PATTERNS.items():
            if pattern.search(leaf):
                findings.append(Finding(urn, path, f"{reason} in plain text"))
                break
    return findings


def scan_deployment(deployment: dict[str, Any]) -> list[Finding]:
    """Every suspect plaintext value in the resources' inputs and outputs (providers' config included)."""
    findings: list[Finding] = []
    for resource in deployment.get("resources") or []:
        urn = resource.get("urn", "?")
        for part in ("inputs", "outputs"):
            if part in resource:
                findings += scan_value(urn, part, resource[part])
    return findings
