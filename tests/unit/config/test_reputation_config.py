from __future__ import annotations

import pytest

from modules.config.loader import validate_config
from modules.config.model import TIERS
from modules.config.reputation import DEV_ZONE, PUBLIC_ZONES, ReputationConfig, split_hostport
from modules.errors import ConfigError


def test_a_dev_stack_checks_the_local_zone_every_30_seconds():
    config = validate_config({})
    assert config.reputation.zones_for(config.environment) == [DEV_ZONE]
    assert config.reputation.interval_for("dev") == 30
    assert config.reputation.concurrency == 50


def test_other_stacks_check_the_public_lists_every_15_minutes():
    reputation = ReputationConfig()
    assert reputation.zones_for("production") == list(PUBLIC_ZONES)
    assert "zen.spamhaus.org" in PUBLIC_ZONES and len(PUBLIC_ZONES) == 5
    assert reputation.interval_for("staging") == 900


def test_explicit_zones_and_interval_win_over_the_defaults():
    reputation = ReputationConfig(dnsbl_zones=["Bl.Example.NET."], check_interval=60)
    assert reputation.zones_for("dev") == ["bl.example.net"]
    assert reputation.interval_for("production") == 60


def test_bad_values_are_named_with_their_key():
    with pytest.raises(ConfigError) as caught:
        validate_config(
            {
                "reputation": {
                    "dnsbl_zones": ["not a zone"],
                    "concurrency": 0,
                    "resolvers": ["resolver.example"],
                    "query_keys": [{"zone": "zen.dq.spamhaus.net", "secret": "spamhausKey"}],
                    "check_intervall": 5,
                }
            }
        )
    text = caught.value.message
    assert "penguinmails:reputation.dnsbl_zones: " in text and "'not a zone' is not a DNS zone name" in text
    assert "penguinmails:reputation.concurrency:" in text
    assert "penguinmails:reputation.resolvers:" in text
    assert "penguinmails:reputation.query_keys[0].secret:" in text and "dnsblKey<Name>" in text
    assert "penguinmails:reputation.check_intervall: unknown key" in text


def test_query_keys_are_secret_config_values_and_compose_the_zone_entries():
    values = {
        "environment": "staging",
        "postgres": {
            t: {"url": f"postgresql://admin@db.example:5432/pm_{t}?sslmode=verify-full"} for t in TIERS
        },
        "hostwinds": {"endpoint": "https://api.example/cloud"},
        "reputation": {"query_keys": [{"zone": "zen.dq.spamhaus.net", "secret": "dnsblKeySpamhaus"}]},
        "dnsblKeySpamhaus": "ignored-here",
    }
    with pytest.raises(ConfigError, match="dnsblKeySpamhaus: must be a secret"):
        validate_config(values)
    config = validate_config(values, secret_keys=["dnsblKeySpamhaus"])
    entries = config.reputation.zone_entries("production", {"dnsblKeySpamhaus": "abc123"})
    assert entries[-1] == {"name": "zen.dq.spamhaus.net", "query_key": "abc123"}
    assert [e["name"] for e in entries[:-1]] == list(PUBLIC_ZONES)
    with pytest.raises(ValueError, match="secret config dnsblKeySpamhaus not set"):
        config.reputation.zone_entries("production", {})


def test_resolvers_are_addresses_with_optional_ports():
    assert split_hostport("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert split_hostport("192.0.2.53") == ("192.0.2.53", 53)
    assert split_hostport("[::1]:5353") == ("::1", 5353)
    assert split_hostport("2001:db8::53") == ("2001:db8::53", 53)
    for bad in ("ns.example:53", "127.0.0.1:x", "127.0.0.1:70000"):
        with pytest.raises(ValueError):
            split_hostport(bad)
