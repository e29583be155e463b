"""Bad stack config fails with the full key and the reason, all problems at once."""

from __future__ import annotations

import textwrap

import pytest

from modules.config.loader import load_stack_file, validate_config
from modules.errors import ConfigError

GOOD = {
    "environment": "dev",
    "fleet": {"nodes": 2, "rdns_domain": "mx.penguinmails.test"},
    "dns": {"zones": [{"name": "penguinmails.test"}, {"name": "acme-mail.test"}]},
    "tenants": [{"slug": "acme", "domains": [{"name": "acme-mail.test", "sending_node": 2}]}],
}


def reasons_for(values, secret_keys=()):
    with pytest.raises(ConfigError) as caught:
        validate_config(values, secret_keys, stack="t")
    return caught.value.reasons


def test_good_config_gives_typed_model():
    config = validate_config(GOOD, stack="t")
    assert config.fleet.node_names() == ["mx-01", "mx-02"]
    assert config.fleet.node_fqdn("mx-01") == "mx-01.mx.penguinmails.test"
    assert config.dns.zone_for("acme-mail.test").name == "acme-mail.test"


@pytest.mark.parametrize(
    ("values", "key", "words"),
    [
        ({"fleet": {"nodes": -1}}, "penguinmails:fleet.nodes", "greater than or equal to 0"),
        ({"fleet": {"nodes": "many"}}, "penguinmails:fleet.nodes", "valid integer"),
        ({"fleet": {"name_pattern": "mx"}}, "penguinmails:fleet.name_pattern", "{index}"),
        (
            {"fleet": {"name_pattern": "MX_{index}"}},
            "penguinmails:fleet.name_pattern",
            "not a valid host label",
        ),
        ({"fleet": {"ssh_public_keys": ["hello"]}}, "penguinmails:fleet.ssh_public_keys", "OpenSSH"),
        ({"fleet": {"rdns_domain": "bad domain"}}, "penguinmails:fleet.rdns_domain", "not a valid DNS name"),
        ({"fleet": {"billing_cycle": "weekly"}}, "penguinmails:fleet.billing_cycle", "hourly"),
        ({"fleet": {"nodez": 2}}, "penguinmails:fleet.nodez", "unknown key"),
        ({"flet": {}}, "penguinmails:flet", "unknown key"),
        ({"environment": "prod"}, "penguinmails:environment", "dev"),
        ({"hostwinds": {"endpoint": "ftp://x"}}, "penguinmails:hostwinds.endpoint", "http(s) URL"),
        ({"postgres": {"oltp": {"mode": "server"}}}, "penguinmails:postgres.oltp", "sslmode"),
        ({"postgres": {"queue": {"host": "10.0.0.5"}}}, "penguinmails:postgres.queue", "loopback"),
        ({"redis": {"port": 70000}}, "penguinmails:redis.port", "less than or equal to 65535"),
        ({"redis": {"queue_user": "Bad User"}}, "penguinmails:redis.queue_user", "pattern"),
        (
            {"dns": {"zones": [{"name": "a.test", "server": "ns1.a.test"}]}},
            "penguinmails:dns.zones[0].server",
            "IP",
        ),
        ({"dns": {"zones": [{"name": "a.test"}, {"name": "a.test"}]}}, "penguinmails:dns.zones", "twice"),
        ({"tenants": [{"slug": "A"}]}, "penguinmails:tenants[0].slug", "lower-case"),
        (
            {"tenants": [{"slug": "acme", "domains": [{"name": "x.test", "dmarc": {"rua": ["x@y"]}}]}]},
            "penguinmails:tenants[0].domains[0].dmarc.rua",
            "mailto:",
        ),
        ({"mail": {"warmup_stage": 30}}, "penguinmails:mail.warmup_stage", "less than or equal to 21"),
    ],
)
def test_bad_value_names_key_and_reason(values, key, words):
    reasons = reasons_for(values)
    assert any(r.startswith(key + ":") and words in r for r in reasons), reasons


def test_cross_checks_report_every_problem_at_once():
    values = {
        **GOOD,
        "tenants": [
            {"slug": "acme", "domains": [{"name": "acme-mail.test", "sending_node": 3}]},
            {"slug": "acme", "domains": [{"name": "acme-mail.test"}, {"name": "nozone.example"}]},
        ],
    }
    reasons = reasons_for(values)
    text = "\n".join(reasons)
    assert "slug 'acme' is used by more than one tenant" in text
    assert "acme-mail.test already belongs to tenant 'acme'" in text
    assert "tenants[acme].domains[nozone.example]: no zone in dns.zones contains it" in text
    assert "sending_node: node 3 does not exist (fleet.nodes is 2)" in text
    assert all(r.startswith("penguinmails:") for r in reasons)


def test_production_refuses_local_databases_and_plain_http():
    reasons = reasons_for({"environment": "production", "hostwinds": {"endpoint": "http://x/api.php"}})
    text = "\n".join(reasons)
    assert "postgres.oltp.mode: a production stack cannot use a local server" in text
    assert "hostwinds.endpoint: a production stack must use https" in text


def test_secret_key_in_plain_text_is_refused_without_echoing_it():
    reasons = reasons_for({"hostwindsApiKey": "hw-super-secret-123"})
    assert any("penguinmails:hostwindsApiKey: must be a secret" in r for r in reasons)
    assert not any("hw-super-secret-123" in r for r in reasons)
    # The same key held as a secret is accepted.
    validate_config({"hostwindsApiKey": "hw-super-secret-123"}, ["hostwindsApiKey"], stack="t")


def test_stack_file_is_validated_and_other_namespaces_ignored(tmp_path):
    path = tmp_path / "Pulumi.staging.yaml"
    path.write_text(
        textwrap.dedent(
            """
            config:
              aws:region: us-east-1
              penguinmails:environment: staging
              penguinmails:tsigSecret:
                secure: AAABAExampleCiphertext
              penguinmails:fleet:
                nodes: 0
            """
        )
    )
    assert load_stack_file(path).environment == "staging"
    path.write_text("config:\n  penguinmails:fleet:\n    nodes: -3\n")
    with pytest.raises(ConfigError) as caught:
        load_stack_file(path)
    assert "stack 'staging'" in caught.value.message
    assert "penguinmails:fleet.nodes" in caught.value.message


def test_unreadable_stack_file_is_a_config_error(tmp_path):
    path = tmp_path / "Pulumi.x.yaml"
    path.write_text("config: [unclosed")
    with pytest.raises(ConfigError):
        load_stack_file(path)


def test_committed_dev_stack_config_is_valid():
    from modules.engine import REPO_ROOT

    assert load_stack_file(REPO_ROOT / "Pulumi.dev.yaml").environment == "dev"


def test_secrets_from_env_maps_secret_keys_to_ci_variables():
    config = validate_config(
        {
            "environment": "staging",
            "secretsFromEnv": {
                "hostwindsApiKey": "CI_HOSTWINDS_API_KEY",
                "postgresAdminPassword.oltp": "CI_PG",
            },
        },
        stack="t",
    )
    assert config.secrets_from_env == {
        "hostwindsApiKey": "CI_HOSTWINDS_API_KEY",
        "postgresAdminPassword.oltp": "CI_PG",
    }


def test_secrets_from_env_refuses_devenv_names_and_unknown_keys_naming_the_field():
    reasons = reasons_for(
        {
            "environment": "staging",
            "secretsFromEnv": {
                "hostwindsApiKey": "PENGUINMAILS_HOSTWINDS_API_KEY",
                "redisPassword": "CI_REDIS",
                "tsigSecret": "not a name",
                "postgresAdminPassword.billing": "CI_PG",
            },
        }
    )
    text = "\n".join(reasons)
    assert (
        "penguinmails:secretsFromEnv.hostwindsApiKey: PENGUINMAILS_* variables belong to the local devenv"
        in text
    )
    assert "penguinmails:secretsFromEnv.redisPassword: 'redisPassword' is not a secret config key" in text
    assert "penguinmails:secretsFromEnv.tsigSecret: must be an environment variable name" in text
    assert "penguinmails:secretsFromEnv.postgresAdminPassword.billing: " in text
    assert len(reasons) == 4


def test_secrets_from_env_is_refused_on_a_dev_stack():
    reasons = reasons_for({"environment": "dev", "secretsFromEnv": {"tsigSecret": "CI_TSIG"}})
    assert reasons == [
        "penguinmails:secretsFromEnv: only staging and production stacks read CI variables (a dev stack "
        "takes its credentials from the devenv variables of tools/env.sh or from its secret config)"
    ]


def test_secrets_from_env_spelt_like_a_field_is_an_unknown_key():
    reasons = reasons_for({"secrets_from_env": {}})
    assert reasons[0].startswith("penguinmails:secrets_from_env: unknown key (known keys: ")
    assert "secretsFromEnv" in reasons[0]
