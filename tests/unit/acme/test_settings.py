"""mail.acme config: validation names the field, and only a dev stack reads the devenv's variables."""

from __future__ import annotations

import pytest

from modules.acme import settings
from modules.config.loader import validate_config
from modules.config.model import LETSENCRYPT_STAGING
from modules.errors import ConfigError

BASE = {
    "fleet": {"nodes": 1, "rdns_domain": "fleet.example.net"},
    "dns": {"zones": [{"name": "example.net"}]},
}
DEVENV = {
    "PENGUINMAILS_ACME_DIRECTORY": "https://10.88.0.1:14000/dir",
    "PENGUINMAILS_ACME_TSIG_KEY_NAME": "penguinmails-acme-dev",
    "PENGUINMAILS_ACME_TSIG_SECRET": "ZGV2LW9ubHk=",
    "PENGUINMAILS_ACME_DNS_SERVER": "10.88.0.1",
    "PENGUINMAILS_DNS_PORT": "5353",
}


def _config(environment="dev", acme=None, **extra):
    values = {**BASE, "environment": environment, **extra}
    if acme is not False:
        values["mail"] = {
            "acme": acme
            or {"contact_email": "hostmaster@example.net", "dns_server": "192.0.2.53", "dns_port": 53}
        }
    return validate_config(values, stack="t")


@pytest.mark.parametrize(
    ("acme", "key", "words"),
    [
        ({}, "penguinmails:mail.acme.contact_email", "required key is missing"),
        ({"contact_email": "nobody"}, "penguinmails:mail.acme.contact_email", "e-mail address"),
        (
            {"contact_email": "a@b.example", "directory_url": "http://ca.example/dir"},
            "penguinmails:mail.acme.directory_url",
            "https://",
        ),
        (
            {"contact_email": "a@b.example", "dns_server": "ns1.example"},
            "penguinmails:mail.acme.dns_server",
            "IP address",
        ),
        ({"contact_email": "a@b.example", "key_type": "dsa"}, "penguinmails:mail.acme.key_type", "ecdsa"),
        (
            {"contact_email": "a@b.example", "renew_before_expiry_days": 0},
            "penguinmails:mail.acme.renew_before_expiry_days",
            "greater",
        ),
        ({"contact_email": "a@b.example", "surprise": 1}, "penguinmails:mail.acme.surprise", "unknown key"),
    ],
)
def test_bad_acme_config_names_the_field(acme, key, words):
    with pytest.raises(ConfigError) as caught:
        validate_config({**BASE, "mail": {"acme": acme}}, stack="t")
    assert any(r.startswith(key) and words in r for r in caught.value.reasons), caught.value.reasons


def test_the_acme_secret_is_a_secret_key():
    with pytest.raises(ConfigError) as caught:
        validate_config({**BASE, "acmeTsigSecret": "c3VwZXJzZWNyZXQ="}, stack="t")
    assert "c3VwZXJzZWNyZXQ=" not in str(caught.value)
    assert any("acmeTsigSecret" in r for r in caught.value.reasons)


def test_acme_is_off_without_config_and_for_mailu():
    assert settings.role_vars(_config(acme=False), DEVENV) == {}
    mailu = validate_config(
        {**BASE, "mail": {"flavor": "mailu", "acme": {"contact_email": "a@b.example"}}}, stack="t"
    )
    assert settings.role_vars(mailu, DEVENV) == {}


def test_dev_stack_takes_pebble_and_bind_from_the_devenv(tmp_path):
    ca = tmp_path / "https-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    values = settings.role_vars(_config(), {**DEVENV, "PENGUINMAILS_ACME_SERVER_CA_FILE": str(ca)})
    assert values["acme_directory_url"] == "https://10.88.0.1:14000/dir"
    assert values["acme_dns_server"] == "10.88.0.1" and values["acme_dns_port"] == 5353
    assert values["acme_server_ca_certificate"] == ca.read_text()
    assert values["acme_tsig_algorithm"] == "HMAC-SHA256"
    assert "acme_tsig_secret" not in values  # secrets travel as secret vars only
    assert settings.tsig_secret_source(_config(), DEVENV) == ("env", "ZGV2LW9ubHk=")


# Production stacks also need remote PostgreSQL and an https Hostwinds endpoint; staging reads config alike.
def test_real_stacks_never_read_the_devenv():
    config = _config("staging")
    values = settings.role_vars(config, {**DEVENV, "PENGUINMAILS_ACME_SERVER_CA_FILE": "/nonexistent"})
    assert values["acme_directory_url"] == LETSENCRYPT_STAGING  # staging first, unless config says otherwise
    assert values["acme_dns_server"] == "192.0.2.53" and values["acme_dns_port"] == 53
    assert "acme_server_ca_certificate" not in values
    assert settings.tsig_secret_source(config, DEVENV) == ("config", None)


def test_real_stacks_take_the_secret_from_the_named_ci_variable():
    config = _config("staging", secretsFromEnv={"acmeTsigSecret": "CI_ACME_TSIG"})
    assert settings.ci_tsig_secret(config, {"CI_ACME_TSIG": "c2VjcmV0"}) == "c2VjcmV0"
    assert settings.ci_tsig_secret(_config("dev"), {"CI_ACME_TSIG": "c2VjcmV0"}) is None


def test_a_missing_pebble_ca_file_is_a_clear_error():
    with pytest.raises(ConfigError) as caught:
        settings.role_vars(_config(), {**DEVENV, "PENGUINMAILS_ACME_SERVER_CA_FILE": "/nonexistent/ca.pem"})
    assert "PENGUINMAILS_ACME_SERVER_CA_FILE" in caught.value.reasons[0]
