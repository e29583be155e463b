"""The dovecot role's SHA512-CRYPT filter: glibc-compatible, stable per user and password."""

from __future__ import annotations

import importlib.util
import warnings

import pytest

from modules.ansible.runner import ANSIBLE_DIR

_spec = importlib.util.spec_from_file_location(
    "penguinmails_filters", ANSIBLE_DIR / "roles" / "dovecot" / "filter_plugins" / "penguinmails.py"
)
filters = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(filters)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # Python 3.11 still has it: the reference implementation (glibc)


@pytest.mark.parametrize(
    ("password", "salt"),
    [("hello world", "saltstring"), ("", "abc"), ("x" * 200, "ABCDEFGHIJKLMNOPQRS"), ("pässwörd", "./09az")],
)
def test_sha512_crypt_matches_glibc(password, salt):
    assert filters.sha512_crypt(password, salt) == crypt.crypt(password, f"$6${salt}")


def test_hash_is_stable_for_one_user_and_differs_between_users():
    first = filters.penguinmails_sha512_crypt("same password", "alice@x.test")
    assert first == filters.penguinmails_sha512_crypt("same password", "alice@x.test")
    assert first != filters.penguinmails_sha512_crypt("same password", "bob@x.test")
    assert first.startswith("$6$") and "same password" not in first
    assert crypt.crypt("same password", first) == first


def test_filter_is_registered_under_its_role_name():
    assert filters.FilterModule().filters()["penguinmails_sha512_crypt"] is filters.penguinmails_sha512_crypt
