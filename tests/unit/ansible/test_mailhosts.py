"""MailHosts: which host gets which domains, keys and settings, from the stack config and the fleet."""

from __future__ import annotations

import re

import pulumi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modules.ansible import mailhosts
from modules.config.model import StackConfig
from modules.config.warmup import WarmupConfig
from modules.reputation.warmup import PROVIDER_DOMAINS, WarmupPlan

INVENTORY = [
    {"name": "mx-01", "fqdn": "mx-01.fleet.example.net", "ip": "203.0.113.10", "service_id": 1},
    {"name": "mx-02", "fqdn": "mx-02.fleet.example.net", "ip": "203.0.113.11", "service_id": 2},
]


def _config(flavor: str = "native", environment: str = "dev", **mail) -> StackConfig:
    return StackConfig.model_validate(
        {
            "environment": environment,
            "fleet": {"nodes": 2, "rdns_domain": "fleet.example.net"},
            "dns": {"zones": [{"name": "example.net"}]},
            "tenants": [
                {"slug": "acme", "domains": [{"name": "acme.example.net", "sending_node": 1}]},
                {"slug": "bolt", "domains": [{"name": "bolt.example.net", "sending_node": 2}]},
                {"slug": "cove", "domains": [{"name": "cove.example.net", "sending_node": 1}]},
            ],
            "mail": {"flavor": flavor, "warmup_stage": 4, "tls_min_version": "TLSv1.3", **mail},
        }
    )


def test_each_node_gets_the_domains_it_sends_for():
    assert mailhosts.domains_by_node(_config()) == {
        "mx-01": ["acme.example.net", "cove.example.net"],
        "mx-02": ["bolt.example.net"],
    }


def test_native_host_vars_bind_each_domain_to_its_node_ip():
    host_vars = mailhosts.plan_host_vars(_config(), INVENTORY)
    first = host_vars["mx-01"]
    assert first["postfix_sending_ips"] == [
        {
            "name": "main",
            "address": "203.0.113.10",
            "helo_name": "mx-01.fleet.example.net",
            "domains": ["acme.example.net", "cove.example.net"],
            "warmup_stage": 4,  # the deprecated mail.warmup_stage is the plan's start day
            "hourly_cap": 40,
        }
    ]
    assert first["opendkim_domains"] == first["dovecot_domains"] == first["postfix_virtual_domains"]
    assert host_vars["mx-02"]["opendkim_domains"] == ["bolt.example.net"]


def test_native_hosts_enforce_the_start_days_caps_from_their_first_converge():
    config = _config().model_copy(
        update={"warmup": WarmupConfig(start_day=5, plan=WarmupPlan(provider_shares={"google": 0.5}))}
    )
    inventory = [*INVENTORY, {"name": "mx-03", "fqdn": "mx-03.fleet.example.net", "ip": "203.0.113.12"}]
    host_vars = mailhosts.plan_host_vars(config, inventory)
    caps = WarmupPlan().caps(5)
    assert host_vars["mx-01"]["postfix_warmup_daily_caps"] == [
        {"name": "main", "daily_cap": caps.daily, "provider_caps": {"google": caps.daily // 2}}
    ]
    assert host_vars["mx-01"]["postfix_sending_ips"][0]["hourly_cap"] == caps.hourly
    assert host_vars["mx-01"]["postfix_sending_ips"][0]["warmup_stage"] == 5
    # A node that sends for no domain has nothing to cap (the role refuses a cap on an IP without domains).
    assert "postfix_warmup_daily_caps" not in host_vars["mx-03"]
    assert "hourly_cap" not in host_vars["mx-03"]["postfix_sending_ips"][0]


def test_a_stack_with_warm_up_off_gets_no_caps():
    config = _config().model_copy(update={"warmup": WarmupConfig(enabled=False)})
    host_vars = mailhosts.plan_host_vars(config, INVENTORY)
    assert not any("postfix_warmup_daily_caps" in v for v in host_vars.values())
    assert not any("hourly_cap" in v["postfix_sending_ips"][0] for v in host_vars.values())


def test_the_report_node_receives_the_report_domain_without_signing_for_it():
    config = _config(reports={"domain": "example.net"})
    assert mailhosts.report_mailbox_addresses(config) == [
        "dmarc-reports@example.net",
        "tlsrpt@example.net",
    ]
    host_vars = mailhosts.plan_host_vars(config, INVENTORY)
    first = host_vars["mx-01"]
    assert first["postfix_virtual_domains"] == ["acme.example.net", "cove.example.net", "example.net"]
    assert first["dovecot_domains"] == first["postfix_virtual_domains"]
    assert first["opendkim_domains"] == ["acme.example.net", "cove.example.net"]
    assert first["postfix_sending_ips"][0]["domains"] == ["acme.example.net", "cove.example.net"]
    assert host_vars["mx-02"]["postfix_virtual_domains"] == ["bolt.example.net"]


def test_each_native_host_serves_the_mta_sts_policies_of_its_own_domains():
    policies = {
        "acme.example.net": "version: STSv1\r\nmode: testing\r\nmx: mail.acme.example.net\r\nmax_age: 86400\r\n",
        "bolt.example.net": "version: STSv1\r\nmode: testing\r\nmx: mail.bolt.example.net\r\nmax_age: 86400\r\n",
    }
    host_vars = mailhosts.plan_host_vars(_config(), INVENTORY, policies)
    # cove.example.net has no policy in the plan: the host serves none for it rather than an invented one.
    assert host_vars["mx-01"]["mta_sts_policies"] == {"acme.example.net": policies["acme.example.net"]}
    assert host_vars["mx-02"]["mta_sts_policies"] == {"bolt.example.net": policies["bolt.example.net"]}
    assert mailhosts.plan_host_vars(_config(), INVENTORY)["mx-01"]["mta_sts_policies"] == {}


def test_mailu_host_vars_bind_the_published_ports():
    assert mailhosts.plan_host_vars(_config("mailu"), INVENTORY)["mx-02"] == {
        "mailu_bind_address": "203.0.113.11",
        "mailu_domains": ["bolt.example.net"],
    }


def test_playbook_vars_carry_warmup_and_tls_floor():
    assert mailhosts.playbook_vars(_config()) == {
        "postfix_warmup_stage": 4,
        "postfix_warmup_provider_domains": {g: list(d) for g, d in PROVIDER_DOMAINS.items()},
        "postfix_tls_min_version": "TLSv1.3",
        "postfix_message_size_limit_mb": 25,
        "dovecot_tls_min_version": "TLSv1.3",
    }


def test_monitoring_agent_vars_open_the_exporters_to_the_given_sources_once():
    assert mailhosts.monitoring_agent_vars(True, ["10.88.0.1", "203.0.113.9", "10.88.0.1"]) == {
        "monitoring_agent_enabled": True,
        "monitoring_agent_allowed_sources": ["10.88.0.1", "203.0.113.9"],
    }
    assert mailhosts.monitoring_agent_vars(False)["monitoring_agent_enabled"] is False


def test_only_the_active_selector_key_is_installed():
    keys = mailhosts.signing_keys(
        {"a.test": {"pm1": "PEM-OLD", "pm2": "PEM-NEW"}, "b.test": {"pm1": "PEM-B"}},
        {"a.test": "pm2", "b.test": "pm1", "c.test": "pm1"},
    )
    assert keys == [
        {"domain": "a.test", "selector": "pm2", "private_key": "PEM-NEW"},
        {"domain": "b.test", "selector": "pm1", "private_key": "PEM-B"},
    ]


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.created = []

    def new_resource(self, args):
        self.created.append(args)
        outputs = dict(args.inputs)
        if args.typ.endswith("GeneratedSecret"):
            outputs["result"] = f"generated-{args.name}"
        return f"{args.name}-id", outputs

    def call(self, args):
        return {}


@pytest.fixture
def mocks():
    found = _Mocks()
    pulumi.runtime.set_mocks(found, preview=False)
    return found


@pulumi.runtime.test
def test_component_declares_one_playbook_per_host_with_dev_settings_and_secret_mailboxes(mocks):
    hosts = mailhosts.MailHosts("pm-mail", _config(), INVENTORY)

    def check(_):
        playbooks = [a for a in mocks.created if a.typ == "pulumi-python:dynamic/ansible:Playbook"]
        # One resource per node, named after it; each converges and checks only its own host.
        assert sorted(p.name for p in playbooks) == ["pm-mail-host-mx-01", "pm-mail-host-mx-02"]
        by_name = {p.name: p.inputs for p in playbooks}
        second = by_name["pm-mail-host-mx-02"]
        assert [h["name"] for h in second["hosts"]] == ["mx-02"] and set(second["host_vars"]) == {"mx-02"}
        assert second["inventory_host"] == "mx-02" and second["refresh_check"] is True
        assert by_name["pm-mail-host-mx-01"]["host_vars"]["mx-01"]["postfix_virtual_domains"] == [
            "acme.example.net",
            "cove.example.net",
        ]
        inputs = second
        assert inputs["playbook"] == "mailhost.yml"
        assert inputs["group_vars"] == mailhosts.DEV_GROUP_VARS
        assert inputs["connection"] == {"host_key_checking": "off"}
        assert inputs["host_vars"]["mx-02"]["postfix_virtual_domains"] == ["bolt.example.net"]
        secret_vars = inputs["secret_vars"]
        assert set(secret_vars) == {"4dabf18193072939515e22adb298388d", "value"}, "secret_vars must be secret"
        users = secret_vars["value"]["dovecot_users"]
        assert [u["address"] for u in users] == [
            "postmaster@acme.example.net",
            "postmaster@bolt.example.net",
            "postmaster@cove.example.net",
            # TLS-RPT's default address is made a real mailbox on the domain's node.
            "tlsrpt@acme.example.net",
            "tlsrpt@bolt.example.net",
            "tlsrpt@cove.example.net",
        ]
        secrets = [a for a in mocks.created if a.typ.endswith("GeneratedSecret")]
        assert len(secrets) == 6

    return pulumi.Output.all(*(p.urn for p in hosts.playbooks.values()), hosts.host_results).apply(check)


@pulumi.runtime.test
def test_component_passes_the_monitoring_host_to_the_agent(mocks):
    hosts = mailhosts.MailHosts(
        "pm-mail", _config(), INVENTORY, monitoring_sources=pulumi.Output.from_input(["10.88.0.1"])
    )

    def check(_):
        playbook = next(a for a in mocks.created if a.typ == "pulumi-python:dynamic/ansible:Playbook")
        assert playbook.inputs["vars"]["monitoring_agent_allowed_sources"] == ["10.88.0.1"]
        assert playbook.inputs["vars"]["monitoring_agent_enabled"] is True
        assert playbook.inputs["vars"]["postfix_warmup_stage"] == 4

    return hosts.playbook.urn.apply(check)


# Stands for the DNS component's private key: MailHosts passes it through untouched (no real key needed).
ACME_PM1_KEY = "stand-in for the private key of acme.example.net/pm1"


class _FakeMailDns:
    """What MailHosts reads from MailDns: the private keys (secret) and the published selectors."""

    dkim_private_keys = pulumi.Output.secret({"acme.example.net": {"pm1": ACME_PM1_KEY}})
    dkim_selectors = pulumi.Output.from_input({"acme.example.net": "pm1"})


@pulumi.runtime.test
def test_mailu_gets_the_published_dkim_key_and_selector_and_the_report_mailboxes(mocks):
    config = _config("mailu", reports={"domain": "example.net"})
    assert mailhosts.playbook_vars(config)["mailu_dkim_selector"] == "pm1"
    hosts = mailhosts.MailHosts("pm-mail", config, INVENTORY, mail_dns=_FakeMailDns())

    def check(_):
        inputs = next(a for a in mocks.created if a.typ == "pulumi-python:dynamic/ansible:Playbook").inputs
        assert inputs["playbook"] == "mailu.yml"
        assert inputs["host_vars"]["mx-01"]["mailu_domains"] == [
            "acme.example.net",
            "cove.example.net",
            "example.net",
        ]
        secret = inputs["secret_vars"]["value"]
        assert secret["mailu_dkim_keys"] == [
            {
                "domain": "acme.example.net",
                "selector": "pm1",
                "private_key": ACME_PM1_KEY,
            }
        ]
        addresses = [u["address"] for u in secret["mailu_users"]]
        assert "dmarc-reports@example.net" in addresses and "tlsrpt@example.net" in addresses
        assert secret["mailu_secret_key"] == "generated-pm-mail-mailu-secret-key"  # the mocks' value

    return hosts.playbook.urn.apply(check)


def test_a_mailu_stack_whose_domains_use_different_selectors_is_refused():
    with pytest.raises(ValueError, match="MailU signs every domain with one DKIM selector"):
        StackConfig.model_validate(
            {
                "fleet": {"nodes": 1},
                "dns": {"zones": [{"name": "example.net"}]},
                "tenants": [
                    {"slug": "acme", "domains": [{"name": "a.example.net", "dkim_selector": "pm1"}]},
                    {"slug": "bolt", "domains": [{"name": "b.example.net", "dkim_selector": "gx1"}]},
                ],
                "mail": {"flavor": "mailu"},
            }
        )


@pulumi.runtime.test
def test_production_hosts_keep_firewall_and_pin_host_keys(mocks):
    hosts = mailhosts.MailHosts("pm-mail", _config(environment="staging"), INVENTORY)

    def check(_):
        inputs = next(a for a in mocks.created if a.typ == "pulumi-python:dynamic/ansible:Playbook").inputs
        assert not inputs.get("group_vars")
        assert inputs["connection"] == {"host_key_checking": "accept-new"}

    return hosts.playbook.urn.apply(check)


def test_only_real_stacks_and_the_embedded_dev_stack_converge():
    assert mailhosts.converges(_config(), "dev") is True
    assert mailhosts.converges(_config(environment="staging"), "staging-eu") is True
    assert mailhosts.converges(_config(), "dnsetest") is False
    no_fleet = StackConfig.model_validate({"environment": "staging"})
    assert mailhosts.converges(no_fleet, "staging") is False


def test_sender_logins_give_each_mailbox_its_tenants_domains_on_the_host():
    plan = mailhosts.plan_sender_logins(
        {"acme": ["acme.example.net", "acme-mail.example.net"], "cove": ["cove.example.net"]},
        ["postmaster@acme.example.net", "Alice@ACME-mail.example.net", "postmaster@cove.example.net"],
    )
    assert plan == [
        {"login": "alice@acme-mail.example.net", "domains": ["acme-mail.example.net", "acme.example.net"]},
        {"login": "postmaster@acme.example.net", "domains": ["acme-mail.example.net", "acme.example.net"]},
        {"login": "postmaster@cove.example.net", "domains": ["cove.example.net"]},
    ]


def test_sender_logins_leave_out_a_mailbox_of_no_tenant_on_the_host():
    plan = mailhosts.plan_sender_logins({"acme": ["acme.example.net"]}, ["postmaster@bolt.example.net"])
    assert plan == []


def test_sender_logins_refuse_a_domain_of_two_tenants():
    with pytest.raises(
        ValueError, match=re.escape("shared.example.net belongs to tenants 'acme' and 'bolt'")
    ):
        mailhosts.plan_sender_logins({"acme": ["shared.example.net"], "bolt": ["Shared.example.net"]}, [])


def test_host_vars_map_each_postmaster_to_its_tenant_and_use_ipv4_only():
    config = StackConfig.model_validate(
        {
            "environment": "dev",
            "fleet": {"nodes": 2, "rdns_domain": "fleet.example.net"},
            "dns": {"zones": [{"name": "example.net"}]},
            "tenants": [
                {
                    "slug": "acme",
                    "domains": [
                        {"name": "acme.example.net", "sending_node": 1},
                        {"name": "acme2.example.net", "sending_node": 1},
                        {"name": "acme3.example.net", "sending_node": 2},
                    ],
                },
                {"slug": "bolt", "domains": [{"name": "bolt.example.net", "sending_node": 1}]},
            ],
        }
    )
    host_vars = mailhosts.plan_host_vars(config, INVENTORY)
    assert host_vars["mx-01"]["postfix_sender_logins"] == [
        {"login": "postmaster@acme.example.net", "domains": ["acme.example.net", "acme2.example.net"]},
        {"login": "postmaster@acme2.example.net", "domains": ["acme.example.net", "acme2.example.net"]},
        {"login": "postmaster@bolt.example.net", "domains": ["bolt.example.net"]},
    ]
    # acme3 is sent from mx-02: its mailbox there may not use acme's domains of mx-01 (they are not signed there).
    assert host_vars["mx-02"]["postfix_sender_logins"] == [
        {"login": "postmaster@acme3.example.net", "domains": ["acme3.example.net"]}
    ]
    assert {v["postfix_inet_protocols"] for v in host_vars.values()} == {"ipv4"}


def test_inet_protocols_include_ipv6_only_for_a_node_with_an_ipv6_address():
    assert mailhosts.inet_protocols({"ip": "203.0.113.10"}) == "ipv4"
    assert mailhosts.inet_protocols({"ip": "203.0.113.10", "ipv6": ""}) == "ipv4"
    assert mailhosts.inet_protocols({"ip": "203.0.113.10", "ipv6": "2001:db8::10"}) == "all"


_label = st.text(alphabet="abcdefghij0123456789", min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    tenants=st.dictionaries(_label, st.lists(_label, min_size=0, max_size=4), min_size=1, max_size=5),
    users=st.lists(st.tuples(_label, st.integers(0, 99)), max_size=12),
    foreign=st.lists(_label, max_size=3),
)
def test_no_login_ever_maps_to_another_tenants_domain(tenants, users, foreign):
    # Domains are made unique per tenant (``<label>.<tenant>.test``), as the config model guarantees.
    by_tenant = {t: [f"{d}.{t}.test" for d in set(ds)] for t, ds in tenants.items()}
    owner = {d: t for t, ds in by_tenant.items() for d in ds}
    every = sorted(owner) + [f"{f}.foreign.test" for f in foreign]
    mailboxes = [f"{local}@{every[pick % len(every)]}" for local, pick in users] if every else []
    plan = mailhosts.plan_sender_logins(by_tenant, mailboxes)
    for entry in plan:
        tenant = owner[entry["login"].rpartition("@")[2]]
        assert entry["domains"] == sorted(by_tenant[tenant])
        assert all(owner[d] == tenant for d in entry["domains"])
    planned = {e["login"] for e in plan}
    assert planned == {m for m in mailboxes if m.rpartition("@")[2] in owner}


@pulumi.runtime.test
def test_the_sender_routes_agent_gets_the_endpoint_its_token_as_a_secret_and_each_domains_tenant(mocks):
    token = pulumi.Output.secret("routes-token-stand-in")
    hosts = mailhosts.MailHosts(
        "pm-mail", _config(), INVENTORY, sender_routes_url="http://10.88.0.1:9396/v1/sending-ips",
        sender_routes_token=token,
    )  # fmt: skip

    def check(_):
        playbooks = [a for a in mocks.created if a.typ == "pulumi-python:dynamic/ansible:Playbook"]
        playbook = next(p for p in playbooks if p.name.endswith("-mx-02"))
        assert playbook.inputs["vars"]["postfix_sender_routes_url"] == "http://10.88.0.1:9396/v1/sending-ips"
        assert "routes-token-stand-in" not in str(playbook.inputs["vars"])
        assert (
            playbook.inputs["secret_vars"]["value"]["postfix_sender_routes_token"] == "routes-token-stand-in"
        )
        for node, host in playbook.inputs["host_vars"].items():
            sent = host["postfix_sending_ips"][0]["domains"]
            assert set(host["postfix_sender_routes_tenants"]) == set(sent), node
        assert playbook.inputs["host_vars"]["mx-02"]["postfix_sender_routes_tenants"] == {
            "bolt.example.net": "bolt"
        }

    return pulumi.Output.all(*(p.urn for p in hosts.playbooks.values())).apply(check)


@pulumi.runtime.test
def test_without_an_endpoint_the_hosts_get_no_agent(mocks):
    hosts = mailhosts.MailHosts("pm-mail", _config(), INVENTORY, sender_routes_token=None)

    def check(_):
        playbook = next(a for a in mocks.created if a.typ == "pulumi-python:dynamic/ansible:Playbook")
        assert playbook.inputs["vars"]["postfix_sender_routes_url"] == ""
        assert "postfix_sender_routes_token" not in playbook.inputs["secret_vars"]["value"]

    return hosts.playbook.urn.apply(check)
