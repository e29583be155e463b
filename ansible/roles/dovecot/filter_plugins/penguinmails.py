"""Filters the PenguinMails roles need and ansible-core does not ship without passlib.

``penguinmails_sha512_crypt`` hashes a mailbox password as SHA512-CRYPT (``$6$salt$hash``, what Dovecot's
passwd-file reads) with a salt derived from the password and a per-user seed. A fresh random salt on
every run would rewrite the users file each time; this keeps re-runs at changed=0 while two users with
the same password still get different hashes. Pure Python (the algorithm of Drepper's "Unix crypt using
SHA-256 and SHA-512"), so it needs neither passlib nor the ``crypt`` module removed in Python 3.13.
"""

from __future__ import annotations

import hashlib
import hmac

_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ORDER = (
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
    (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
    (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41),
)  # fmt: skip
ROUNDS = 5000
SALT_LENGTH = 16


def _b64_from_24bit(b2: int, b1: int, b0: int, count: int) -> str:
    word = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(count):
        out.append(_ITOA64[word & 0x3F])
        word >>= 6
    return "".join(out)


def _repeat(block: bytes, length: int) -> bytes:
    return (block * (length // len(block) + 1))[:length]


def sha512_crypt(password: str, salt: str) -> str:
    """``$6$<salt>$<hash>`` with the default 5000 rounds (no ``rounds=`` field), like glibc's crypt()."""
    secret = password.encode()
    salt_bytes = salt.encode()[:SALT_LENGTH]
    alternate = hashlib.sha512(secret + salt_bytes + secret).digest()
    digest_a = hashlib.sha512(secret + salt_bytes)
    digest_a.update(_repeat(alternate, len(secret)) if secret else b"")
    length = len(secret)
    while length > 0:
        digest_a.update(alternate if length & 1 else secret)
        length >>= 1
    current = digest_a.digest()
    p_bytes = _repeat(hashlib.sha512(secret * len(secret)).digest(), len(secret)) if secret else b""
    s_bytes = _repeat(hashlib.sha512(salt_bytes * (16 + current[0])).digest(), len(salt_bytes))
    for i in range(ROUNDS):
        step = hashlib.sha512(p_bytes if i & 1 else current)
        if i % 3:
            step.update(s_bytes)
        if i % 7:
            step.update(p_bytes)
        step.update(current if i & 1 else p_bytes)
        current = step.digest()
    encoded = "".join(_b64_from_24bit(current[a], current[b], current[c], 4) for a, b, c in _ORDER)
    encoded += _b64_from_24bit(0, 0, current[63], 2)
    return f"$6${salt_bytes.decode()}${encoded}"


def derived_salt(password: str, seed: str) -> str:
    """16 salt characters from HMAC-SHA256(password, seed): stable for one user and password."""
    mac = hmac.new(password.encode(), seed.encode(), hashlib.sha256).digest()
    return "".join(_ITOA64[byte & 0x3F] for byte in mac[:SALT_LENGTH])


def penguinmails_sha512_crypt(password: str, seed: str) -> str:
    return sha512_crypt(str(password), derived_salt(str(password), str(seed)))


class FilterModule:
    """Registers the filters with Ansible."""

    def filters(self):
        return {"penguinmails_sha512_crypt": penguinmails_sha512_crypt}
