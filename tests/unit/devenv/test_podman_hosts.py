"""PodmanHosts refuses bad input with every reason at once, before any podman command runs."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from devenv import podman_hosts
from devenv.podman_hosts import PodmanHosts, public_key_problems
from modules.errors import ValidationError


def _openssh(private) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


@pytest.fixture
def no_podman(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"podman was called: {args}")

    monkeypatch.setattr(podman_hosts, "_podman", refuse)


def test_real_public_keys_pass():
    assert public_key_problems(_openssh(ed25519.Ed25519PrivateKey.generate()) + " ops@example") == []
    assert public_key_problems(_openssh(ec.generate_private_key(ec.SECP256R1()))) == []


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("ssh-ed25519", "must look like"),
        ("ssh-dss AAAAB3NzaC1kc3M=", "is not one of"),
        ("ssh-ed25519 not*base64", "not valid base64"),
        ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIA==", "does not hold a ssh-rsa key"),
        ("ssh-ed25519 AAAA\nssh-ed25519 BBBB", "single line"),
    ],
)
def test_bad_public_keys_name_the_reason(key, reason):
    (problem,) = public_key_problems(key)
    assert reason in problem


def test_create_reports_every_bad_field_before_running_podman(no_podman):
    hosts = PodmanHosts(prefix="pm-unit")
    with pytest.raises(ValidationError) as caught:
        hosts.create("bad name", ["ssh-ed25519 AAAA", 7], hostname="Not_A.Host")
    text = str(caught.value)
    assert text.startswith("podman host 'bad name': 4 problems")
    for part in ("name 'bad name'", "authorized_keys[0]", "authorized_keys[1]: must be a string", "hostname"):
        assert part in text


def test_authorized_keys_must_be_a_list_not_one_string(no_podman):
    key = _openssh(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(ValidationError, match="authorized_keys: must be a list"):
        PodmanHosts(prefix="pm-unit").create("ok", key)


def test_names_over_63_characters_with_the_prefix_are_refused(no_podman):
    with pytest.raises(ValidationError, match="1-63 characters"):
        PodmanHosts(prefix="pm-unit").create("x" * 60, [])


def test_container_names_carry_the_prefix_once():
    hosts = PodmanHosts(prefix="pm-unit")
    assert hosts.container_name("mx-1") == "pm-unit-mx-1"
    assert hosts.container_name("pm-unit-mx-1") == "pm-unit-mx-1"


def test_bad_prefix_and_kind_are_refused(monkeypatch):
    with pytest.raises(ValidationError, match="prefix"):
        PodmanHosts(prefix="bad prefix")
    with pytest.raises(ValidationError, match="kind 'desktop'"):
        PodmanHosts(kind="desktop")
    monkeypatch.setenv("PENGUINMAILS_PODMAN_IMAGE_KIND", "mailhost")
    assert PodmanHosts().kind == "mailhost"
