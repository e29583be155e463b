"""Connection targets, URLs and password verifiers, without a server."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from modules.postgres.client import (
    ServerTarget,
    connection_url,
    scram_sha256_verifier,
    server_target,
)
from modules.providers import ProviderSettings

DEVENV = {
    "PENGUINMAILS_POSTGRES_HOST": "127.0.0.1",
    "PENGUINMAILS_POSTGRES_PORT": "5433",
    "PENGUINMAILS_POSTGRES_ADMIN_USER": "postgres",
    "PENGUINMAILS_POSTGRES_ADMIN_PASSWORD": "devenv-admin-pw",
}


def settings(postgres: dict | None = None, secret: object = None) -> ProviderSettings:
    import json

    raw = {}
    if postgres is not None:
        raw["penguinmails:postgres"] = json.dumps(postgres)
    if secret is not None:
        raw["penguinmails:postgresAdminPassword"] = secret if isinstance(secret, str) else json.dumps(secret)
    return ProviderSettings(raw)


@pytest.fixture
def devenv(monkeypatch):
    for key, value in DEVENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def no_devenv(monkeypatch):
    for key in [*DEVENV, "PENGUINMAILS_POSTGRES_OLTP_ADMIN_PASSWORD"]:
        monkeypatch.delenv(key, raising=False)


def test_a_local_tier_takes_the_devenv_variables_first(devenv):
    target = server_target(settings({"oltp": {"port": 6000}}, secret="config-pw"), "oltp")
    assert (target.host, target.port, target.user, target.password) == (
        "127.0.0.1",
        5433,
        "postgres",
        "devenv-admin-pw",
    )


def test_a_local_tier_falls_back_to_config_and_the_secret(no_devenv):
    target = server_target(
        settings({"oltp": {"port": 6000, "admin_user": "admin"}}, secret="config-pw"), "oltp"
    )
    assert (target.port, target.user, target.password) == (6000, "admin", "config-pw")
    assert server_target(settings(), "queue").port == 5433


def test_a_server_tier_never_takes_its_address_from_the_devenv(devenv, monkeypatch):
    config = {"oltp": {"url": "postgresql://pm_admin@db.example.com:6543/pm_oltp?sslmode=verify-full"}}
    target = server_target(settings(config, secret={"oltp": "oltp-pw", "content": "content-pw"}), "oltp")
    assert (target.host, target.port, target.user, target.sslmode) == (
        "db.example.com",
        6543,
        "pm_admin",
        "verify-full",
    )
    assert target.password == "oltp-pw"
    monkeypatch.setenv("PENGUINMAILS_POSTGRES_OLTP_ADMIN_PASSWORD", "ci-injected")
    assert server_target(settings(config, secret="one-for-all"), "oltp").password == "ci-injected"


def test_the_target_never_shows_its_password():
    target = ServerTarget("db", 5432, "admin", "s3cret-pw")
    assert "s3cret-pw" not in repr(target)
    assert target.redact("FATAL: password s3cret-pw rejected") == "FATAL: password *** rejected"
    assert target.with_login("app", "other").label == "app@db:5432"


def test_connection_urls_encode_every_part():
    url = connection_url("app", "p@ss:w/rd", "127.0.0.1", 5433, "pm_dev_oltp", "prefer")
    assert url == "postgresql://app:p%40ss%3Aw%2Frd@127.0.0.1:5433/pm_dev_oltp?sslmode=prefer"
    assert connection_url("a", "b", "::1", 5432, "d", "require").startswith("postgresql://a:b@[::1]:5432/")


def test_the_scram_verifier_is_postgresql_format_and_checks_out():
    salt = b"0123456789abcdef"
    verifier = scram_sha256_verifier("pencil", salt=salt, iterations=4096)
    method, rest = verifier.split("$", 1)
    params, keys = rest.split("$")
    iterations, salt64 = params.split(":")
    stored64, server64 = keys.split(":")
    assert method == "SCRAM-SHA-256" and iterations == "4096"
    assert base64.b64decode(salt64) == salt
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert base64.b64decode(stored64) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server64) == hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    assert "pencil" not in verifier
    assert scram_sha256_verifier("pencil") != scram_sha256_verifier("pencil")  # a fresh salt each time


# Which stacks read the devenv: only dev ones (tools/env.sh must not redirect staging or production).

PROD_SERVER = {"oltp": {"url": "postgresql://pm_admin@db.example.com:6543/pm_oltp?sslmode=verify-full"}}


def stack(environment, postgres=None, secret=None, secrets_from_env=None) -> ProviderSettings:
    raw = settings(postgres, secret)._raw
    raw["penguinmails:environment"] = environment
    if secrets_from_env is not None:
        import json

        raw["penguinmails:secretsFromEnv"] = json.dumps(secrets_from_env)
    return ProviderSettings(raw)


def test_dev_stack_uses_the_devenv_for_a_local_tier(devenv):
    target = server_target(stack("dev", {"oltp": {"port": 6000}}, secret="config-pw"), "oltp")
    assert (target.port, target.password) == (5433, "devenv-admin-pw")


def test_staging_local_tier_ignores_the_devenv_and_uses_config(devenv):
    target = server_target(
        stack("staging", {"oltp": {"port": 6000, "admin_user": "pm_admin"}}, secret="config-pw"), "oltp"
    )
    assert (target.host, target.port, target.user, target.password) == (
        "127.0.0.1",
        6000,
        "pm_admin",
        "config-pw",
    )


def test_production_server_tier_ignores_every_devenv_password(devenv, monkeypatch):
    monkeypatch.setenv("PENGUINMAILS_POSTGRES_OLTP_ADMIN_PASSWORD", "devenv-oltp-pw")
    target = server_target(stack("production", PROD_SERVER, secret={"oltp": "oltp-pw"}), "oltp")
    assert (target.host, target.port, target.password) == ("db.example.com", 6543, "oltp-pw")
    assert server_target(stack("production", PROD_SERVER), "oltp").password is None


def test_production_reads_the_ci_variables_named_in_secrets_from_env(devenv, monkeypatch):
    monkeypatch.setenv("CI_PG_OLTP", "ci-oltp-pw")
    monkeypatch.setenv("CI_PG_ALL", '{"oltp": "ci-all-oltp", "content": "ci-all-content"}')
    named = {"postgresAdminPassword.oltp": "CI_PG_OLTP", "postgresAdminPassword": "CI_PG_ALL"}
    servers = {**PROD_SERVER, "content": {"url": "postgresql://pm_admin@c.example.com/pm?sslmode=require"}}
    assert (
        server_target(stack("production", servers, secrets_from_env=named), "oltp").password == "ci-oltp-pw"
    )
    assert server_target(stack("production", servers, secrets_from_env=named), "content").password == (
        "ci-all-content"
    )
    # The secret config value wins over any CI variable.
    with_secret = stack("production", servers, secret={"oltp": "config-oltp"}, secrets_from_env=named)
    assert server_target(with_secret, "oltp").password == "config-oltp"
    assert server_target(with_secret, "content").password == "ci-all-content"


def test_production_refuses_a_devenv_variable_in_secrets_from_env(devenv):
    from modules.errors import ConfigError

    named = {"postgresAdminPassword": "PENGUINMAILS_POSTGRES_ADMIN_PASSWORD"}
    with pytest.raises(
        ConfigError, match=r"penguinmails:secretsFromEnv\.postgresAdminPassword: PENGUINMAILS_"
    ):
        server_target(stack("production", PROD_SERVER, secrets_from_env=named), "oltp")
