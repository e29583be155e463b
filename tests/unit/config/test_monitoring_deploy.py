"""monitoring.deploy: devenv (dev's default), vps (a host the stack orders) or external (elsewhere's default)."""

from __future__ import annotations

import pytest

from modules.config.loader import validate_config
from modules.errors import ConfigError

ZONES = {"zones": [{"name": "example.com"}]}
TENANTS = [{"slug": "acme", "domains": [{"name": "example.com"}]}]
VPS = {"ssh_key_names": ["ops"], "webhook_url": "https://hooks.example.net/pm"}


def _config(monitoring: dict, environment: str = "dev", **extra) -> dict:
    return {"environment": environment, "monitoring": monitoring, **extra}


def _staging(monitoring: dict) -> dict:
    tiers = {
        tier: {"mode": "server", "url": f"postgresql://admin@db.example.com:5432/{tier}?sslmode=verify-full"}
        for tier in ("oltp", "content", "analytics", "queue")
    }
    return _config(monitoring, "staging", postgres=tiers, dns=ZONES, fleet={"nodes": 1}, tenants=TENANTS)


def test_defaults_never_order_a_host_an_upgrade_did_not_ask_for():
    assert validate_config({}, stack="t").monitoring.deploy_for("dev") == "devenv"
    staging = validate_config(_staging({}), stack="staging").monitoring
    assert staging.deploy is None and staging.deploy_for("staging") == "external"


def test_vps_with_a_webhook_is_accepted_with_one_node():
    vps = validate_config(_config({"deploy": "vps", "vps": VPS}), stack="t").monitoring.vps
    assert vps.nodes == 1 and vps.node_names() == ["mon-01"] and vps.retention_time == "30d"


@pytest.mark.parametrize(
    ("monitoring", "words"),
    [
        ({"deploy": "vps"}, "monitoring.vps"),
        ({"vps": VPS}, "only used with monitoring.deploy: vps"),
        ({"deploy": "vps", "vps": {"ssh_key_names": ["ops"]}}, "alerts that reach nobody"),
        ({"deploy": "vps", "vps": {**VPS, "email_to": ["oncall@example.com"]}}, "email_to needs email_from"),
        ({"deploy": "vps", "vps": {**VPS, "email_to": ["not an address"]}}, "is not an email address"),
        ({"deploy": "vps", "vps": {**VPS, "nodes": 2}}, "less than or equal to 1"),
        ({"deploy": "vps", "vps": {**VPS, "retention_time": "forever"}}, "retention_time"),
    ],
)
def test_bad_monitoring_names_the_field(monitoring, words):
    with pytest.raises(ConfigError) as caught:
        validate_config(_config(monitoring), stack="t")
    assert any("monitoring" in r and words in r for r in caught.value.reasons), caught.value.reasons


def test_a_staging_stack_cannot_use_the_local_prometheus():
    with pytest.raises(ConfigError, match="devenv is the local dev Prometheus"):
        validate_config(_staging({"deploy": "devenv"}), stack="staging")


def test_alert_mail_comes_from_a_sending_domain_of_the_stack():
    email = {**VPS, "email_to": ["oncall@example.org"], "email_from": "alerts@elsewhere.example"}
    with pytest.raises(ConfigError, match=r"elsewhere\.example is not a sending domain"):
        validate_config(_staging({"deploy": "vps", "vps": email}), stack="staging")
    email["email_from"] = "Alerts@Example.com"
    vps = validate_config(_staging({"deploy": "vps", "vps": email}), stack="staging").monitoring.vps
    assert vps.email_from == "alerts@example.com"


def test_alert_mail_does_not_take_over_the_postmaster_mailbox():
    email = {**VPS, "email_to": ["oncall@example.org"], "email_from": "postmaster@example.com"}
    with pytest.raises(ConfigError, match="give the alerts their own address"):
        validate_config(_staging({"deploy": "vps", "vps": email}), stack="staging")


@pytest.mark.parametrize("section", ["redis", "monitoring"])
def test_service_hosts_carry_no_sending_ips(section):
    given = {
        "redis": {
            "redis": {
                "deploy": "vps",
                "tls": True,
                "vps": {"ssh_key_names": ["ops"], "additional_ips": {1: ["203.0.113.7"]}},
            }
        },
        "monitoring": {
            "monitoring": {"deploy": "vps", "vps": {**VPS, "additional_ips": {1: ["203.0.113.7"]}}}
        },
    }[section]
    with pytest.raises(ConfigError, match="only the sending fleet"):
        validate_config(given, stack="t")
