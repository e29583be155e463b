"""The postgres section of the stack config: defaults, server URLs, and errors that name the key."""

from __future__ import annotations

import pytest

from modules.config.loader import validate_config
from modules.errors import ConfigError


def test_local_tiers_default_to_the_devenv_server():
    config = validate_config({})
    for tier in config.postgres.tiers().values():
        assert (tier.mode, tier.host, tier.port, tier.enabled, tier.create_database) == (
            "local",
            "127.0.0.1",
            5433,
            True,
            True,
        )


def test_a_server_url_fills_the_tier_fields():
    config = validate_config(
        {
            "postgres": {
                "oltp": {"url": "postgresql://pm%40admin@db.example.com:6543/pm_oltp?sslmode=verify-full"}
            }
        }
    )
    oltp = config.postgres.oltp
    assert (oltp.mode, oltp.host, oltp.port, oltp.admin_user, oltp.database, oltp.sslmode) == (
        "server",
        "db.example.com",
        6543,
        "pm@admin",
        "pm_oltp",
        "verify-full",
    )


@pytest.mark.parametrize(
    ("tier", "reason"),
    [
        (
            {"url": "postgresql://admin:hunter2@db.example.com/x?sslmode=require"},
            "must not contain a password",
        ),
        (
            {"url": "postgresql://admin@db.example.com/x", "host": "other"},
            "give either url or host, not both",
        ),
        (
            {"url": "postgresql://admin@db.example.com/x?sslmode=require&options=x"},
            "unsupported parameter(s) options",
        ),
        ({"url": "postgresql://admin@db.example.com/x"}, "sslmode must be require, verify-ca or verify-full"),
        ({"url": "mysql://admin@db.example.com/x"}, "url must look like postgresql://"),
        ({"host": "10.0.0.5"}, "a local tier must listen on loopback"),
    ],
)
def test_bad_tier_config_names_the_tier_and_the_reason(tier, reason):
    with pytest.raises(ConfigError) as caught:
        validate_config({"postgres": {"content": tier}})
    text = "\n".join(caught.value.reasons)
    assert "penguinmails:postgres.content" in text and reason in text
    assert "hunter2" not in text


def test_name_prefix_must_be_an_identifier():
    with pytest.raises(ConfigError) as caught:
        validate_config({"postgres": {"queue": {"name_prefix": "Bad-Prefix"}}})
    assert caught.value.reasons[0].startswith("penguinmails:postgres.queue.name_prefix:")
