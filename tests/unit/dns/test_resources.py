"""The dynamic providers' plain methods (no server): check, diff, key generation, rotation by clock."""

from __future__ import annotations

import datetime as dt

import pytest
from pulumi.output import Unknown
from pulumi.runtime.rpc import UNKNOWN

from modules.dns import resources
from modules.dns.dkim import key_bits
from modules.dns.resources import DkimKeyProvider, DnsRecordSetProvider
from modules.errors import ConfigError
from tests.support.devenv_vars import DEVENV_VARS, stack_settings


def props(records, **extra):
    return {
        "zone": "acme.test",
        "records": records,
        "server": "127.0.0.1",
        "port": 5353,
        "tsig_key_name": "k",
        "tsig_algorithm": "hmac-sha256",
        "max_change_share": 0.5,
        "adopt_existing": False,
        "resolvers": [],
        "default_ttl": 3600,
        "force": False,
        **extra,
    }


GOOD = [
    {"name": "acme.test", "type": "MX", "values": ["10 mail.acme.test"]},
    {"name": "Mail.Acme.Test.", "type": "A", "ttl": 300, "values": ["192.0.2.1"]},
]


def test_check_puts_records_in_canonical_form():
    result = DnsRecordSetProvider().check({}, props(GOOD))
    assert result.failures == []
    assert result.inputs["records"] == [
        {"name": "acme.test", "type": "MX", "ttl": 3600, "values": ["10 mail.acme.test."]},
        {"name": "mail.acme.test", "type": "A", "ttl": 300, "values": ["192.0.2.1"]},
    ]


def test_check_refuses_bad_records_with_every_reason_and_no_network():
    bad = [
        {"name": "acme.test", "type": "CNAME", "values": ["x.test"]},
        {"name": "_dmarc.acme.test", "type": "TXT", "values": ["v=DMARC1; p=maybe"]},
        {"name": "acme.test", "type": "MX", "values": ["10 missing.acme.test"]},
    ]
    result = DnsRecordSetProvider().check({}, props(bad, port=70000))
    reasons = [(f.property, f.reason) for f in result.failures]
    assert ("port", "must be a port number 1-65535, got 70000") in reasons
    # Field errors stop before record checks (which may need the resolver); fix them and re-check.
    result = DnsRecordSetProvider().check({}, props(bad))
    messages = [f.reason for f in result.failures if f.property == "records"]
    assert any("acme.test CNAME: a CNAME cannot sit at the zone apex" in m for m in messages)
    assert any("_dmarc.acme.test TXT (DMARC): p=maybe" in m for m in messages)
    assert any("MX target missing.acme.test does not resolve" in m for m in messages)


def test_check_reports_records_outside_the_zone():
    result = DnsRecordSetProvider().check(
        {}, props([{"name": "other.test", "type": "A", "values": ["192.0.2.1"]}])
    )
    assert [f.reason for f in result.failures] == ["other.test A: is outside zone acme.test"]


@pytest.mark.parametrize("placeholder", [UNKNOWN, Unknown()], ids=["sentinel", "Unknown"])
def test_check_keeps_unknown_values_for_later_and_validates_the_rest(placeholder):
    records = [
        {"name": "acme.test", "type": "MX", "values": ["10 mail.acme.test"]},
        {"name": "mail.acme.test", "type": "A", "values": [placeholder]},
        {"name": "acme.test", "type": "TXT", "values": [placeholder]},
    ]
    result = DnsRecordSetProvider().check({}, props(records, port=placeholder))
    assert result.failures == []  # the A record counts as present for the MX check
    assert {"name": "mail.acme.test", "type": "A", "values": [placeholder]} in result.inputs["records"]
    assert DnsRecordSetProvider().diff("acme.test", result.inputs, result.inputs).changes is True


def test_retired_records_drop_out_when_their_time_has_passed(monkeypatch):
    records = [
        {
            "name": "pm1._domainkey.acme.test",
            "type": "TXT",
            "values": ["v=DKIM1; k=rsa; p="],
            "not_after": "2026-11-20T00:00:00+00:00",
        }
    ]
    monkeypatch.setattr(resources, "_now", lambda: dt.datetime(2026, 11, 19, tzinfo=dt.UTC))
    assert len(DnsRecordSetProvider().check({}, props(records)).inputs["records"]) == 1
    monkeypatch.setattr(resources, "_now", lambda: dt.datetime(2026, 11, 21, tzinfo=dt.UTC))
    assert DnsRecordSetProvider().check({}, props(records)).inputs["records"] == []


def test_diff_ignores_bookkeeping_and_order_and_replaces_on_zone_change():
    provider = DnsRecordSetProvider()
    checked = provider.check({}, props(GOOD)).inputs
    olds = {**checked, "records": list(reversed(checked["records"])), "owned": ["x"], "force": True}
    assert provider.diff("acme.test", olds, checked).changes is False
    changed = {
        **checked,
        "records": [
            *checked["records"],
            {"name": "x.acme.test", "type": "A", "ttl": 60, "values": ["192.0.2.2"]},
        ],
    }
    assert provider.diff("acme.test", olds, changed).changes is True
    moved = {**checked, "zone": "other.test"}
    assert provider.diff("acme.test", olds, moved).replaces == ["zone"]
    assert provider.diff("acme.test", olds, moved).delete_before_replace is False


def test_state_from_before_an_input_existed_reads_as_its_default():
    provider = DnsRecordSetProvider()
    checked = provider.check({}, props(GOOD)).inputs
    old_state = {k: v for k, v in checked.items() if k not in ("backend", "route53_zone_id")}
    assert provider.diff("acme.test", old_state, {**checked, "backend": "rfc2136"}).changes is False


def test_same_zone_replaced_in_place_is_deleted_before_it_is_recreated():
    # Created first, the new set would claim the identical records and the old set's delete would
    # remove them: the zone would end up empty (seen on the dev stack).
    provider = DnsRecordSetProvider()
    checked = provider.check({}, props(GOOD)).inputs
    diff = provider.diff("acme.test", checked, {**checked, "port": 5354})
    assert diff.replaces == ["port"]
    assert diff.delete_before_replace is True


def test_secret_comes_from_the_environment_only_for_the_matching_key(monkeypatch):
    provider = DnsRecordSetProvider()
    monkeypatch.setenv("PENGUINMAILS_TSIG_KEY_NAME", "penguinmails-dev")
    monkeypatch.setenv("PENGUINMAILS_TSIG_SECRET", "ZW52LXNlY3JldA==")
    assert provider._secret("penguinmails-dev") == "ZW52LXNlY3JldA=="
    with pytest.raises(Exception, match="no TSIG secret for key 'other'") as error:
        provider._secret("other")
    assert "ZW52" not in str(error.value)


def test_dkim_key_provider_makes_a_2048_bit_key_and_replaces_on_any_change():
    provider = DkimKeyProvider()
    checked = provider.check({}, {"domain": "Acme.Test", "selector": "pm1", "bits": 2048.0})
    assert checked.failures == [] and checked.inputs["domain"] == "acme.test"
    created = provider.create(checked.inputs)
    assert created.id == "pm1._domainkey.acme.test"
    assert key_bits(created.outs["public_key"]) == 2048
    assert created.outs["dns_value"].endswith(created.outs["public_key"])
    assert provider.diff(created.id, created.outs, {**checked.inputs, "selector": "pm2"}).replaces == [
        "selector"
    ]
    assert provider.diff(created.id, created.outs, checked.inputs).changes is False
    # A new key size is for the next selector: the published key is never swapped under the same one.
    assert provider.diff(created.id, created.outs, {**checked.inputs, "bits": 4096}).changes is False
    refused = provider.check({}, {"domain": "acme.test", "selector": "Bad_Selector", "bits": 1024})
    assert {f.property for f in refused.failures} == {"selector", "bits"}


# Which stacks read the devenv's TSIG key and the Route 53 endpoint override: dev ones only.


@pytest.fixture
def env_sh(monkeypatch):
    for key, value in DEVENV_VARS.items():
        monkeypatch.setenv(key, value)


def configured(settings) -> DnsRecordSetProvider:
    provider = DnsRecordSetProvider()
    provider.settings = settings
    return provider


def test_dev_stack_signs_with_the_devenv_tsig_key(env_sh):
    provider = configured(stack_settings("dev", tsigSecret="Y29uZmlnLXNlY3JldA=="))
    assert provider._secret("penguinmails-dev") == DEVENV_VARS["PENGUINMAILS_TSIG_SECRET"]
    # Another key name than the devenv's: the secret config value.
    assert provider._secret("prod-key") == "Y29uZmlnLXNlY3JldA=="


def test_production_stack_never_signs_with_the_devenv_tsig_key(env_sh):
    provider = configured(stack_settings("production", tsigSecret={"penguinmails-dev": "Y29uZmln"}))
    assert provider._secret("penguinmails-dev") == "Y29uZmln"
    with pytest.raises(resources.DnsAuthError, match="no TSIG secret for key 'penguinmails-dev'") as caught:
        configured(stack_settings("production"))._secret("penguinmails-dev")
    assert DEVENV_VARS["PENGUINMAILS_TSIG_SECRET"] not in str(caught.value)
    assert "secretsFromEnv.tsigSecret" in str(caught.value)


def test_production_stack_takes_the_tsig_secret_from_the_named_ci_variable(env_sh, monkeypatch):
    monkeypatch.setenv("CI_TSIG", '{"ns1-key": "bnMxLXNlY3JldA=="}')
    provider = configured(stack_settings("production", secretsFromEnv={"tsigSecret": "CI_TSIG"}))
    assert provider._secret("ns1-key") == "bnMxLXNlY3JldA=="
    with pytest.raises(resources.DnsAuthError):
        provider._secret("penguinmails-dev")


def test_production_stack_refuses_the_devenv_tsig_variable_in_secrets_from_env(env_sh):
    provider = configured(
        stack_settings("production", secretsFromEnv={"tsigSecret": "PENGUINMAILS_TSIG_SECRET"})
    )
    with pytest.raises(ConfigError, match=r"penguinmails:secretsFromEnv\.tsigSecret: PENGUINMAILS_"):
        provider._secret("penguinmails-dev")


def test_route53_endpoint_override_applies_to_dev_stacks_only(env_sh):
    route53 = props(GOOD, backend="route53", route53_zone_id="Z123")
    dev = configured(stack_settings("dev"))._client(route53)
    assert dev.where == DEVENV_VARS["PENGUINMAILS_ROUTE53_ENDPOINT"]
    assert dev._client.meta.endpoint_url == DEVENV_VARS["PENGUINMAILS_ROUTE53_ENDPOINT"]
    prod = configured(stack_settings("production"))._client(route53)
    assert prod.where == "route53"
    assert prod._client.meta.endpoint_url == "https://route53.amazonaws.com"
