"""MailHosts: which host gets which domains, keys and settings, from the stack config and the fleet."""

from __future__ import annotations

import pulumi
import pytest

from modules.ansible import mailhosts
from modules.config.model import StackConfig

INVENTORY = [
    {"name": "mx-01", "fqdn": "mx-01.fleet.example.net", "ip": "203.0.113.10", "service_id": 1},
    {"name": "mx-02", "fqdn": "mx-02.fleet.example.net", "ip": "203.0.113.11", "service_id": 2},
]


def _config(flavor: str = "native", environment: str = "dev") -> StackConfig:
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
            "mail": {"flavor": flavor, "warmup_stage": 4, "tls_min_version": "TLSv1.3"},
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
        }
    ]
    assert first["opendkim_domains"] == first["dovecot_domains"] == first["postfix_virtual_domains"]
    assert host_vars["mx-02"]["opendkim_domains"] == ["bolt.example.net"]


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
        "mailu_bind_address": "203.0.113.11"
    }


def test_playbook_vars_carry_warmup_and_tls_floor():
    assert mailhosts.playbook_vars(_config()) == {
        "postfix_warmup_stage": 4,
        "postfix_tls_min_version": "TLSv1.3",
        "postfix_message_size_limit_mb": 25,
        "dovecot_tls_min_version": "TLSv1.3",
    }


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
def test_component_declares_one_playbook_with_dev_settings_and_secret_mailboxes(mocks):
    hosts = mailhosts.MailHosts("pm-mail", _config(), INVENTORY)

    def check(_):
        playbooks = [a for a in mocks.created if a.typ == "pulumi-python:dynamic/ansible:Playbook"]
        assert len(playbooks) == 1
        inputs = playbooks[0].inputs
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
        ]
        secrets = [a for a in mocks.created if a.typ.endswith("GeneratedSecret")]
        assert len(secrets) == 3

    return hosts.playbook.urn.apply(check)


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
