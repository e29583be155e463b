"""DKIM keys: generation, the published record, the 2048-bit floor, rotation times."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from modules.dns.dkim import dkim_txt, generate_key, key_bits, public_from_private, retire_at, validate_dkim


def _public_b64(key) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def test_generated_key_is_rsa_2048_and_its_record_is_valid():
    private_pem, public = generate_key(2048)
    assert private_pem.startswith("-----BEGIN " + "PRIVATE KEY-----")  # PKCS#8 PEM
    assert key_bits(public) == 2048
    assert public_from_private(private_pem) == public
    assert validate_dkim(dkim_txt(public)) == []


def test_small_keys_are_refused_at_generation_and_in_records():
    with pytest.raises(ValueError, match=r"2048\.\.4096"):
        generate_key(1024)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point
    problems = validate_dkim(dkim_txt(_public_b64(weak)))
    assert problems == ["the RSA key has 1024 bits; at least 2048 are required"]


def test_bare_pkcs1_keys_and_ed25519_keys_are_understood():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs1 = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    assert key_bits(base64.b64encode(pkcs1).decode()) == 2048
    ed = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    assert validate_dkim(f"v=DKIM1; k=ed25519; p={base64.b64encode(ed).decode()}") == []


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("v=DKIM1; k=rsa", "p= is missing"),
        ("v=DKIM1; k=rsa; p=!!!", "not valid base64"),
        ("v=DKIM1; k=dsa; p=AAAA", "k=dsa"),
        ("k=rsa; v=DKIM1; p=", "must be the first tag"),
        ("v=DKIM2; p=", "v must be DKIM1"),
    ],
)
def test_bad_records_are_reported(text, fragment):
    assert any(fragment in problem for problem in validate_dkim(text))


def test_empty_key_revokes_a_selector_on_purpose():
    assert validate_dkim("v=DKIM1; k=rsa; p=") == []


def test_retire_time_is_creation_plus_overlap():
    assert retire_at("2026-11-01T10:00:00+00:00", 7) == "2026-11-08T10:00:00+00:00"
    assert retire_at("2026-11-01T10:00:00", 0.5) == "2026-11-01T22:00:00+00:00"
