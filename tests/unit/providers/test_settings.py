"""ProviderSettings: which stacks read the devenv's variables, and where secrets come from elsewhere."""

from __future__ import annotations

import pytest

from modules.errors import ConfigError
from modules.providers import ProviderSettings
from tests.support.devenv_vars import DEVENV_VARS, stack_settings

PROD_ENDPOINT = "https://clients.hostwinds.com/cloud/api.php"


@pytest.fixture
def env_sh(monkeypatch):
    """The shell after `source tools/env.sh`: every devenv variable set."""
    for key, value in DEVENV_VARS.items():
        monkeypatch.setenv(key, value)


def test_environment_defaults_to_dev_like_the_model():
    assert ProviderSettings().environment == "dev" and ProviderSettings().is_dev
    assert stack_settings("dev").is_dev
    assert stack_settings("production").environment == "production"
    assert not stack_settings("staging").is_dev
    # Anything but dev (even a value the program would refuse) counts as not dev: fail closed.
    assert not stack_settings("Dev").is_dev


def test_dev_stack_takes_the_devenv_endpoint_and_key_first(env_sh):
    settings = stack_settings("dev", hostwindsApiKey="config-key")
    assert (
        settings.endpoint("PENGUINMAILS_HOSTWINDS_ENDPOINT", PROD_ENDPOINT)
        == DEVENV_VARS["PENGUINMAILS_HOSTWINDS_ENDPOINT"]
    )
    assert settings.credential("PENGUINMAILS_HOSTWINDS_API_KEY", "hostwindsApiKey") == "devenv-hostwinds-key"


def test_dev_stack_falls_back_to_config_without_the_devenv(monkeypatch):
    for key in DEVENV_VARS:
        monkeypatch.delenv(key, raising=False)
    settings = stack_settings(None, hostwindsApiKey="config-key")
    assert settings.endpoint("PENGUINMAILS_HOSTWINDS_ENDPOINT", PROD_ENDPOINT) == PROD_ENDPOINT
    assert settings.credential("PENGUINMAILS_HOSTWINDS_API_KEY", "hostwindsApiKey") == "config-key"


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_production_stack_ignores_the_devenv_and_uses_its_config(env_sh, environment):
    settings = stack_settings(environment, hostwindsApiKey="config-key")
    assert settings.endpoint("PENGUINMAILS_HOSTWINDS_ENDPOINT", PROD_ENDPOINT) == PROD_ENDPOINT
    assert settings.credential("PENGUINMAILS_HOSTWINDS_API_KEY", "hostwindsApiKey") == "config-key"
    assert settings.dev_env("PENGUINMAILS_HOSTWINDS_API_KEY") is None


def test_production_stack_without_a_secret_has_none_even_with_the_devenv(env_sh):
    settings = stack_settings("production")
    assert settings.credential("PENGUINMAILS_HOSTWINDS_API_KEY", "hostwindsApiKey") is None
    assert settings.endpoint("PENGUINMAILS_REDIS_PORT", None) is None


def test_production_stack_reads_the_ci_variable_named_in_secrets_from_env(env_sh, monkeypatch):
    monkeypatch.setenv("CI_HOSTWINDS_KEY", "ci-key")
    settings = stack_settings("production", secretsFromEnv={"hostwindsApiKey": "CI_HOSTWINDS_KEY"})
    assert settings.credential("PENGUINMAILS_HOSTWINDS_API_KEY", "hostwindsApiKey") == "ci-key"
    # The secret config value wins over the CI variable.
    both = stack_settings(
        "production", hostwindsApiKey="config-key", secretsFromEnv={"hostwindsApiKey": "CI_HOSTWINDS_KEY"}
    )
    assert both.credential("PENGUINMAILS_HOSTWINDS_API_KEY", "hostwindsApiKey") == "config-key"
    # Named but unset in CI: nothing (never the devenv's variable).
    monkeypatch.delenv("CI_HOSTWINDS_KEY")
    assert settings.credential("PENGUINMAILS_HOSTWINDS_API_KEY", "hostwindsApiKey") is None


def test_a_ci_variable_holding_a_json_object_arrives_decoded(monkeypatch):
    monkeypatch.setenv("CI_PG", '{"oltp": "a", "queue": "b"}')
    settings = stack_settings("production", secretsFromEnv={"postgresAdminPassword": "CI_PG"})
    assert settings.ci_secret("postgresAdminPassword") == {"oltp": "a", "queue": "b"}


def test_dev_stack_never_reads_ci_variables(env_sh, monkeypatch):
    monkeypatch.setenv("CI_HOSTWINDS_KEY", "ci-key")
    monkeypatch.delenv("PENGUINMAILS_HOSTWINDS_API_KEY")
    settings = stack_settings("dev", secretsFromEnv={"hostwindsApiKey": "CI_HOSTWINDS_KEY"})
    assert settings.ci_secret("hostwindsApiKey") is None
    assert settings.credential("PENGUINMAILS_HOSTWINDS_API_KEY", "hostwindsApiKey") is None


@pytest.mark.parametrize(
    ("mapping", "field", "reason"),
    [
        ({"hostwindsApiKey": "PENGUINMAILS_HOSTWINDS_API_KEY"}, "secretsFromEnv.hostwindsApiKey", "devenv"),
        ({"redisAdminPassword": "penguinmails_redis"}, "secretsFromEnv.redisAdminPassword", "devenv"),
        ({"awsKey": "CI_AWS"}, "secretsFromEnv.awsKey", "not a secret config key"),
        ({"tsigSecret": "1-bad name"}, "secretsFromEnv.tsigSecret", "environment variable name"),
    ],
)
def test_bad_secrets_from_env_is_refused_naming_the_field(mapping, field, reason):
    settings = stack_settings("production", secretsFromEnv=mapping)
    with pytest.raises(ConfigError) as caught:
        settings.credential("PENGUINMAILS_HOSTWINDS_API_KEY", "hostwindsApiKey")
    assert f"penguinmails:{field}: " in caught.value.message
    assert reason in caught.value.message


def test_hostwinds_settings_follow_the_rule(env_sh):
    from modules.hostwinds.resources import settings_from

    dev = settings_from(stack_settings("dev", hostwinds={"endpoint": PROD_ENDPOINT}))
    assert (dev.endpoint, dev.api_key) == (
        DEVENV_VARS["PENGUINMAILS_HOSTWINDS_ENDPOINT"],
        "devenv-hostwinds-key",
    )
    prod = settings_from(
        stack_settings("production", hostwinds={"endpoint": PROD_ENDPOINT}, hostwindsApiKey="config-key")
    )
    assert (prod.endpoint, prod.api_key) == (PROD_ENDPOINT, "config-key")
