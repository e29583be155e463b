"""The policy rules as pure functions: each one fires on what it guards and stays quiet otherwise."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modules.audit.secrets_scan import SECRET_SIG, SECRET_SIG_VALUE
from modules.config.model import FleetConfig
from modules.policy import pack, rules
from modules.policy.rules import Resource, StackView

REPO = Path(__file__).resolve().parents[3]

P = "urn:pulumi:prod::penguinmails::penguinmails:platform:Platform"
FLEET = f"{P}$penguinmails:hostwinds:VpsFleet$pulumi-python:dynamic/hostwinds:Vps::"
TIER_VPS = f"{P}$penguinmails:postgres:Tier$pulumi-python:dynamic/hostwinds:Vps::"
SECRET = {SECRET_SIG: SECRET_SIG_VALUE, "ciphertext": "v1:abc"}
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def vps(name: str, rdns: object = "mx.fleet.example.com", plan: object = 1, urn: str = FLEET) -> Resource:
    return Resource(rules.VPS, urn + name, {"rdns": rdns, "plan_id": plan})


def dkim(domain: str, created_at: str | None = None) -> Resource:
    props = {"domain": domain, "selector": "pm1", **({"created_at": created_at} if created_at else {})}
    return Resource(rules.DKIM, f"{P}$pulumi-python:dynamic/dns:DkimKey::{domain}", props)


def zone(*records: tuple[str, str]) -> Resource:
    values = [{"name": n, "type": "TXT", "values": [v]} for n, v in records]
    return Resource(rules.RECORDSET, f"{P}$pulumi-python:dynamic/dns:RecordSet::zone", {"records": values})


def playbook(mode: str, acme: bool, names: list[str]) -> Resource:
    policy = f"version: STSv1\r\nmode: {mode}\r\nmx: mail.acme.test\r\n"
    props = {
        "vars": {"acme_enabled": acme},
        "host_vars": {"mx-01": {"acme_names": names, "mta_sts_policies": {"acme.test": policy}}},
    }
    return Resource("pulumi-python:dynamic/ansible:Playbook", f"{P}::mail", props)


def database(tier: str) -> Resource:
    return Resource(rules.DATABASE, f"{P}$pulumi-python:dynamic/postgres:Database::{tier}", {"tier": tier})


def stack(secret_keys: tuple[str, ...] = (), **sections) -> StackView:
    return StackView({f"penguinmails:{k}": v for k, v in sections.items()}, frozenset(secret_keys))


def names(found: list[rules.Violation]) -> list[str]:
    return [v.policy for v in found]


def test_a_fleet_node_without_rdns_is_blocked_but_platform_hosts_and_unknowns_are_not():
    found = rules.node_rdns(
        [vps("mx-01", ""), vps("mx-02", None), vps("mx-03"), vps("pg", "", urn=TIER_VPS)], stack()
    )
    assert [v.urn.rsplit("::", 1)[-1] for v in found] == ["mx-01", "mx-02"]
    assert "set fleet.rdns_domain" in found[0].message
    assert rules.node_rdns([vps("mx-04", UNKNOWN)], stack()) == []


def test_a_sending_domain_needs_a_dmarc_record_with_a_policy():
    domains = [dkim("acme.test"), dkim("globex.test"), dkim("initech.test")]
    records = zone(
        ("_dmarc.acme.test", "v=DMARC1; p=reject"),
        ("_dmarc.globex.test", "v=DMARC1; rua=mailto:x@globex.test"),  # no p=: not a policy
        ("initech.test", "v=spf1 -all"),
    )
    found = rules.domain_dmarc([*domains, records], stack())
    assert [v.message.split()[2] for v in found] == ["globex.test", "initech.test"]
    # Domains from the config count too; a stack that writes no DNS has nothing to judge.
    tenants = [{"slug": "acme", "domains": [{"name": "hooli.test"}]}]
    assert "hooli.test" in rules.domain_dmarc([records], stack(tenants=tenants))[0].message
    assert rules.domain_dmarc(domains, stack()) == []


def test_mta_sts_enforce_needs_a_managed_certificate_for_the_policy_host():
    certified = ["mx-01.fleet.test", "mta-sts.acme.test"]
    assert names(rules.mta_sts_certificate([playbook("enforce", False, certified)], stack())) == [
        "mta-sts-certificate"
    ]
    assert names(rules.mta_sts_certificate([playbook("enforce", True, ["mx-01.fleet.test"])], stack())) == [
        "mta-sts-certificate"
    ]
    assert rules.mta_sts_certificate([playbook("enforce", True, certified)], stack()) == []
    assert rules.mta_sts_certificate([playbook("testing", False, [])], stack()) == []
    # The config asking for enforce counts for every sending domain, before any playbook exists.
    found = rules.mta_sts_certificate([dkim("acme.test")], stack(mail={"mta_sts_mode": "enforce"}))
    assert "acme.test: MTA-STS mode is enforce" in found[0].message


def test_secret_looking_config_must_be_a_pulumi_secret_and_the_value_is_never_named():
    view = stack(
        ("penguinmails:postgresAdminPassword",),
        hostwindsApiKey="plain-key-value",
        postgresAdminPassword="decrypted-by-the-engine",  # listed as secret: fine
        tsigSecret=SECRET,
        secretsFromEnv={"hostwindsApiKey": "HOSTWINDS_API_KEY"},  # names variables, holds none
        dns={"tsig_key_name": "pm", "tsig_algorithm": "hmac-sha256"},
        backup={"nested": {"cipher_pass": "plain-cipher"}},
    )
    found = rules.config_plaintext_secret([], view)
    assert [v.message.split()[1] for v in found] == [
        "penguinmails:backup.nested.cipher_pass",
        "penguinmails:hostwindsApiKey",
    ]
    assert not any("plain-key-value" in v.message or "plain-cipher" in v.message for v in found)


def test_a_plaintext_password_or_private_key_in_resource_inputs_is_blocked():
    pem = "-----BEGIN " + "PRIVATE KEY-----\nMIIB\n-----END " + "PRIVATE KEY-----"
    role = "pulumi-python:dynamic/postgres:Role"
    resources = [
        Resource(role, f"{P}::plain", {"role": "app", "password": "hunter2"}),
        Resource(role, f"{P}::secret", {"role": "app", "password": SECRET}),
        Resource(role, f"{P}::unknown", {"password": UNKNOWN}),
        Resource("pulumi-python:dynamic/ansible:Playbook", f"{P}::mail", {"vars": {"tls_key": pem}}),
        Resource("pulumi:providers:pulumi-python", f"{P}::default", {"penguinmails:tsigSecret": "x"}),
    ]
    found = rules.resource_plaintext_secret(resources, stack())
    assert [(v.urn.rsplit("::", 1)[-1], v.message.split(": ")[0]) for v in found] == [
        ("plain", "plain input password"),
        ("mail", "mail input vars.tls_key"),
    ]
    assert not any("hunter2" in v.message or "MIIB" in v.message for v in found)


@pytest.mark.parametrize("environment", ["production", "prod"])
def test_a_production_tier_needs_verify_full_and_a_backup_stanza(environment):
    stanza = Resource(rules.STANZA, f"{P}::backup", {"tiers": ["oltp"]})
    postgres = {"oltp": {"sslmode": "verify-full"}, "content": {"sslmode": "verify-ca"}}
    view = stack(environment=environment, postgres=postgres)
    found = rules.evaluate([database("oltp"), database("content"), stanza], view)
    assert [(v.policy, v.urn.rsplit("::", 1)[-1]) for v in found] == [
        ("production-tier-backup", "content"),
        ("production-tier-tls", "content"),
    ]
    off = stack(environment=environment, postgres={**postgres, "backup": {"enabled": False}})
    assert (
        "postgres.backup.enabled is false"
        in rules.production_tier_backup([database("oltp"), stanza], off)[0].message
    )
    # Dev and staging tiers are not judged.
    assert (
        rules.production_tier_tls([database("content")], stack(environment="staging", postgres=postgres))
        == []
    )


def test_the_fleet_budget_counts_sending_nodes_and_prices_them():
    nodes = [vps("mx-01", plan=1.0), vps("mx-02", plan=2), vps("pg", urn=TIER_VPS)]
    assert rules.fleet_budget(nodes, stack(fleet={"max_nodes": 2})) == []
    over = rules.fleet_budget(nodes, stack(fleet={"max_nodes": 1}))
    assert [v.message for v in over] == ["the fleet has 2 nodes, above fleet.max_nodes 1"]
    priced = {"max_monthly_cost": 20, "plan_prices": {"1": 9.5, "2": 12}}
    assert (
        "the fleet costs 21.50 a month, above fleet.max_monthly_cost 20.00"
        in rules.fleet_budget(nodes, stack(fleet=priced))[0].message
    )
    assert rules.fleet_budget(nodes, stack(fleet={**priced, "max_monthly_cost": 21.5})) == []
    unpriced = rules.fleet_budget(nodes, stack(fleet={"max_monthly_cost": 50, "plan_prices": {"1": 9.5}}))
    assert "no fleet.plan_prices entry for plan(s) 2" in unpriced[0].message


def test_the_budget_fields_are_validated_in_the_config():
    assert FleetConfig(max_nodes=3, max_monthly_cost=30, plan_prices={1: 9.5}).max_nodes == 3
    with pytest.raises(ValueError, match="plan_prices: give the monthly price of plan 1"):
        FleetConfig(max_monthly_cost=30)
    with pytest.raises(ValueError, match="max_nodes"):
        FleetConfig(max_nodes=-1)


def test_advisories_dmarc_none_old_dkim_keys_and_disabled_warmup():
    now = datetime(2026, 12, 1, tzinfo=UTC)
    resources = [
        dkim("acme.test", "2026-01-01T00:00:00+00:00"),
        dkim("globex.test", "2026-11-01T00:00:00Z"),
        zone(("_dmarc.acme.test", "v=DMARC1; p=none"), ("_dmarc.globex.test", "v=DMARC1; p=reject")),
        vps("mx-01"),
    ]
    assert [v.message.split(":")[0] for v in rules.dmarc_none(resources, stack())] == ["acme.test"]
    old = rules.dkim_key_age(resources, stack(), now=now)
    assert [(v.level, v.urn.rsplit("::", 1)[-1]) for v in old] == [("advisory", "acme.test")]
    assert old[0].message == "DKIM key pm1 of acme.test is 334 days old (over 180): rotate it"
    assert len(rules.dkim_key_age(resources, stack(), max_days=10, now=now)) == 2
    assert names(rules.warmup_disabled(resources, stack(warmup={"enabled": False}))) == ["warmup-disabled"]
    assert rules.warmup_disabled(resources, stack()) == []
    # Advisories never make a stack fail: evaluate() lists them after every mandatory violation.
    found = rules.evaluate([*resources, vps("mx-02", "")], stack(warmup={"enabled": False}))
    assert [v.level for v in found] == ["mandatory"] + ["advisory"] * (len(found) - 1)


def test_the_audit_section_reads_the_config_the_default_provider_recorded():
    export = {
        "deployment": {
            "resources": [
                {
                    "urn": f"{P}::default",
                    "type": "pulumi:providers:pulumi-python",
                    "inputs": {
                        "penguinmails:environment": "dev",
                        "penguinmails:hostwindsApiKey": "planted-plaintext-key",
                        "penguinmails:tsigSecret": SECRET,
                        "penguinmails:fleet": json.dumps({"max_nodes": 0}),
                    },
                },
                {
                    "urn": FLEET + "mx-01",
                    "type": rules.VPS,
                    "inputs": {"plan_id": 1},
                    "outputs": {"rdns": "mx"},
                },
            ]
        }
    }
    section = rules.audit_section(export)
    assert section["recorded"] is True and section["advisories"] == []
    assert sorted((v["policy"], v["message"].split()[1]) for v in section["violations"]) == [
        ("config-plaintext-secret", "penguinmails:hostwindsApiKey"),
        ("fleet-budget", "fleet"),
    ]
    assert "planted-plaintext-key" not in json.dumps(section)


def test_secret_config_values_never_reach_the_rules():
    view = rules.parse_config(
        {"penguinmails:tsigSecret": "decrypted", "penguinmails:fleet": '{"max_nodes": 2}', "x:y": "not json"},
        ["penguinmails:tsigSecret"],
    )
    assert view.config == {
        "penguinmails:tsigSecret": {SECRET_SIG: SECRET_SIG_VALUE},
        "penguinmails:fleet": {"max_nodes": 2},
        "x:y": "not json",
    }


def test_the_pack_masks_secret_values_and_unwraps_the_sdk_proxies():
    from pulumi_policy.proxy import unknown_checking_proxy

    raw = {"password": {SECRET_SIG: SECRET_SIG_VALUE, "value": "the-real-password"}, "list": [{"a": 1}]}
    masked = pack.masked(raw)
    assert masked["password"] == {SECRET_SIG: SECRET_SIG_VALUE} and "the-real-password" not in json.dumps(
        masked
    )
    proxied = unknown_checking_proxy(masked)
    assert pack.plain(proxied) == {"password": {SECRET_SIG: SECRET_SIG_VALUE}, "list": [{"a": 1}]}
    assert set(rules.RULES) == set(rules.DESCRIPTIONS) and all(rules.DESCRIPTIONS.values())


def test_the_audit_report_shows_policy_violations_and_advisories():
    from modules.audit import markdown, report

    export = {
        "deployment": {
            "resources": [
                {
                    "urn": f"{P}::default",
                    "type": "pulumi:providers:pulumi-python",
                    "inputs": {"penguinmails:hostwindsApiKey": "planted-plaintext-key"},
                },
                {"urn": FLEET + "mx-01", "type": rules.VPS, "inputs": {"rdns": ""}, "outputs": {"rdns": ""}},
                {"urn": dkim("acme.test").urn, "type": rules.DKIM, "outputs": {"domain": "acme.test"}},
                {
                    "urn": f"{P}::zone",
                    "type": rules.RECORDSET,
                    "modified": "2026-12-01T00:00:00Z",
                    "outputs": {
                        "records": [
                            {"name": "_dmarc.acme.test", "type": "TXT", "values": ["v=DMARC1; p=none"]}
                        ]
                    },
                },
            ]
        }
    }
    data = report.build(export, [], stack="audit", repo=REPO, policy=rules.audit_section(export))
    assert [v["policy"] for v in data["policy"]["violations"]] == [
        "config-plaintext-secret",
        "fleet-node-rdns",
    ]
    assert [v["policy"] for v in data["policy"]["advisories"]] == ["dmarc-policy-none"]
    text = markdown.render(data)
    assert "| config-plaintext-secret | mandatory |" in text and "Advisory:" in text
    assert "planted-plaintext-key" not in text
