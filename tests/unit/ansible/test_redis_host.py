"""RedisHost: the redis playbook's variables, with passwords and the TLS key only as secrets."""

from __future__ import annotations

import pulumi
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modules.ansible import redis_host
from modules.errors import ValidationError
from modules.redis import acl

CERT = "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n"
CA = "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n"
# A throw-away key made when the tests load: no key material is committed.
KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    .decode()
)
ADMIN_PASSWORD = "admin-password-0123456789"
QUEUE_PASSWORD = "queue-password-0123456789"
PREFIXES = ["queue:", "job:"]
HOST = {"name": "redis-1", "fqdn": "redis-1.penguinmails.test", "ip": "10.88.0.7"}
SECRET_SIG = "4dabf18193072939515e22adb298388d"  # how Pulumi marks a secret value in mocks


def _host(**kwargs) -> redis_host.RedisHost:
    args = {
        "host": HOST,
        "admin_password": pulumi.Output.secret(ADMIN_PASSWORD),
        "queue_user": "penguinmails-queue",
        "queue_password": pulumi.Output.secret(QUEUE_PASSWORD),
        "key_prefixes": PREFIXES,
        "tls_certificate": CERT,
        "tls_private_key": pulumi.Output.secret(KEY),
        "tls_ca_certificate": CA,
        "connection": {"user": "root", "private_key_file": "/keys/id_ed25519", "host_key_checking": "strict"},
    }
    return redis_host.RedisHost("pm-redis", **{**args, **kwargs})


@pulumi.runtime.test
def test_one_playbook_with_plain_settings_and_secret_credentials(mocks):
    host = _host()

    def check(_):
        playbooks = [a for a in mocks.created if a.typ == "pulumi-python:dynamic/ansible:Playbook"]
        assert len(playbooks) == 1
        inputs = playbooks[0].inputs
        assert inputs["playbook"] == "redis.yml"
        assert inputs["hosts"] == [HOST]
        assert inputs["connection"]["private_key_file"] == "/keys/id_ed25519"
        assert inputs["vars"]["redis_bind_addresses"] == ["10.88.0.7"]
        assert inputs["vars"]["redis_tls_port"] == 6380
        assert inputs["vars"]["redis_tls_certificate"] == CERT
        plain = repr({k: v for k, v in inputs.items() if k != "secret_vars"})
        for secret in (ADMIN_PASSWORD, QUEUE_PASSWORD, "the-key-body", acl.password_sha256(QUEUE_PASSWORD)):
            assert secret not in plain
        assert set(inputs["secret_vars"]) == {SECRET_SIG, "value"}, "secret_vars must be secret"
        secret_vars = inputs["secret_vars"]["value"]
        assert secret_vars["redis_admin_password"] == ADMIN_PASSWORD
        assert secret_vars["redis_tls_private_key"] == KEY
        assert secret_vars["redis_acl_users"] == [
            {
                "name": "penguinmails-queue",
                "rules": acl.queue_user_rules(
                    "penguinmails-queue", acl.password_sha256(QUEUE_PASSWORD), PREFIXES
                ),
            }
        ]

    return host.playbook.urn.apply(check)


@pulumi.runtime.test
def test_bind_addresses_and_settings_can_be_given(mocks):
    host = _host(bind_addresses=["10.88.0.7", "-::1"], tls_port=6390, maxmemory="2gb")

    def check(_):
        inputs = next(a for a in mocks.created if a.typ == "pulumi-python:dynamic/ansible:Playbook").inputs
        assert inputs["vars"]["redis_bind_addresses"] == ["10.88.0.7", "-::1"]
        assert inputs["vars"]["redis_tls_port"] == 6390
        assert inputs["vars"]["redis_maxmemory"] == "2gb"

    return pulumi.Output.all(host.playbook.urn, host.port).apply(check)


def test_bad_plain_settings_are_refused_naming_each():
    with pytest.raises(ValidationError) as caught:
        redis_host.playbook_vars(
            bind_addresses=["redis.internal.test"],
            tls_certificate="x",
            tls_ca_certificate=CA,
            maxmemory="lots",
        )
    text = str(caught.value.reasons)
    assert "bind_addresses" in text and "tls_certificate" in text and "maxmemory" in text
    assert "tls_ca_certificate" not in text


def test_bad_secrets_are_refused_without_quoting_them():
    with pytest.raises(ValidationError) as caught:
        redis_host.secret_vars(
            admin_password="short-secret",
            tls_private_key="not-a-key-material",
            queue_user="penguinmails-queue",
            queue_password=QUEUE_PASSWORD,
            key_prefixes=PREFIXES,
        )
    text = str(caught.value)
    assert "admin_password" in text and "tls_private_key" in text and "queue_password" not in text
    assert "short-secret" not in text and "not-a-key-material" not in text
