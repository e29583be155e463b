"""DKIM keys (RFC 6376, RFC 8301): generation, the ``<selector>._domainkey`` record, checks and rotation.

Keys are RSA, 2048 bits or more, made with ``cryptography`` off the mail hosts, so rebuilding a host keeps
its keys and DNS. The private key only ever leaves this module as a Pulumi secret output (see
:class:`modules.dns.resources.DkimKey`). Rotation is by selector: the new selector is published at once,
the old one stays published until ``overlap`` has passed since the new key was made, then it is removed.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

MIN_BITS = 2048
MAX_BITS = 4096
SELECTOR_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
KNOWN_TAGS = ("v", "g", "h", "k", "n", "p", "s", "t")


def generate_key(bits: int = MIN_BITS) -> tuple[str, str]:
    """A new RSA key: (private key PEM in PKCS#8, public key as base64 DER SubjectPublicKeyInfo)."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"DKIM keys must have {MIN_BITS}..{MAX_BITS} bits, not {bits}")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, base64.b64encode(public_der).decode()


def public_from_private(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def dkim_txt(public_b64: str, key_type: str = "rsa") -> str:
    """The TXT value; longer than 255 bytes for RSA-2048, so it is split on the wire."""
    return f"v=DKIM1; k={key_type}; p={public_b64}"


def dkim_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def parse_dkim(text: str) -> tuple[dict[str, str], list[str]]:
    errors: list[str] = []
    tags: dict[str, str] = {}
    for position, piece in enumerate(p.strip() for p in text.split(";")):
        if not piece:
            continue
        name, sep, value = piece.partition("=")
        name = name.strip()
        if not sep:
            errors.append(f"'{piece[:40]}' is not tag=value")
            continue
        if name in tags:
            errors.append(f"tag '{name}' appears more than once")
        if name == "v" and position != 0:
            errors.append("v=DKIM1 must be the first tag")
        tags[name] = re.sub(r"\s+", "", value)
    if "v" in tags and tags["v"] != "DKIM1":
        errors.append(f"v must be DKIM1 (got {tags['v']!r})")
    if "p" not in tags:
        errors.append("the public key tag p= is missing")
    return tags, errors


def key_bits(public_b64: str, key_type: str = "rsa") -> int:
    """The size of a published key; raises ValueError when it is not a key of that type."""
    try:
        der = base64.b64decode(public_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("p= is not valid base64") from None
    if key_type == "ed25519":
        if len(der) != 32:
            raise ValueError("p= is not a 32-byte Ed25519 key")
        ed25519.Ed25519PublicKey.from_public_bytes(der)
        return 256
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        try:  # RFC 6376 also allows a bare RSAPublicKey
            key = serialization.load_der_public_key(_wrap_pkcs1(der))
        except (ValueError, UnsupportedAlgorithm):
            raise ValueError("p= is not an RSA public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("p= is not an RSA public key")
    return key.key_size


def _wrap_pkcs1(der: bytes) -> bytes:
    """Wrap a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo so ``cryptography`` can load it."""
    algorithm = bytes.fromhex("300d06092a864886f70d0101010500")
    bit_string = b"\x03" + _der_length(len(der) + 1) + b"\x00" + der
    body = algorithm + bit_string
    return b"\x30" + _der_length(len(body)) + body


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def validate_dkim(text: str, min_bits: int = MIN_BITS) -> list[str]:
    """Every problem of a DKIM TXT value (syntax, key type, RSA key size)."""
    tags, errors = parse_dkim(text)
    key_type = tags.get("k", "rsa").lower()
    if key_type not in ("rsa", "ed25519"):
        errors.append(f"k={key_type} is not rsa or ed25519")
        return errors
    public = tags.get("p")
    if public == "":
        return errors  # an empty p= revokes the selector (RFC 6376 3.6.1): valid on purpose
    if public:
        try:
            bits = key_bits(public, key_type)
        except ValueError as exc:
            errors.append(str(exc))
        else:
            if key_type == "rsa" and bits < min_bits:
                errors.append(f"the RSA key has {bits} bits; at least {min_bits} are required")
    return errors


def retire_at(new_key_created_at: str, overlap_days: float) -> str:
    """When a replaced selector may be removed: the new key's creation plus the overlap (ISO-8601 UTC)."""
    created = dt.datetime.fromisoformat(new_key_created_at.replace("Z", "+00:00"))
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    return (created + dt.timedelta(days=overlap_days)).astimezone(dt.UTC).isoformat(timespec="seconds")
