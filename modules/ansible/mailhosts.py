"""``MailHosts``: the fleet converged with the mail roles, as part of ``pulumi up``.

The stack's config decides the flavor (``mail.flavor``: native roles or MailU, one for the whole fleet),
which node sends for which tenant domain (``sending_node``), the warm-up stage and TLS floor. The fleet's
inventory output (ready nodes with IPs) and the DNS component's DKIM keys (secret; the selectors resolve
only once the records are published) feed one :class:`AnsiblePlaybook`, so hosts never sign with a key
that is not in DNS yet. Each domain gets a ``postmaster@`` mailbox with a generated password.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from modules.acme import names as acme_names
from modules.acme import settings as acme_settings
from modules.ansible.resources import AnsiblePlaybook
from modules.config.model import StackConfig
from modules.secrets.resources import GeneratedSecret

# What a dev host (a podman container) cannot do: load nftables rules (no CAP_NET_ADMIN), set the clock
# (no CAP_SYS_TIME), reach DNS blocklists (no internet). Production hosts keep the role defaults.
DEV_GROUP_VARS: dict[str, Any] = {
    "common_firewall_enabled": False,
    "common_timesync_set_clock": False,
    "spamassassin_skip_network_tests": True,
}


def converges(config: StackConfig, stack: str) -> bool:
    """Whether a stack configures its fleet: real stacks and the embedded ``dev`` stack do.

    Throwaway stacks of the dev environment (other components' engine tests run the whole project on
    simulated fleets, often with unreachable in-memory nodes) declare the fleet without configuring it.
    """
    return config.fleet.nodes > 0 and (config.environment != "dev" or stack == "dev")


def domains_by_node(config: StackConfig) -> dict[str, list[str]]:
    """Fleet node name → the tenant domains it sends for (``sending_node`` is 1-based)."""
    names = config.fleet.node_names()
    found: dict[str, list[str]] = {name: [] for name in names}
    for _, domain in config.sending_domains():
        if 1 <= domain.sending_node <= len(names):
            found[names[domain.sending_node - 1]].append(domain.name)
    return {name: sorted(domains) for name, domains in found.items()}


def plan_host_vars(config: StackConfig, inventory: list[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per host: its domains, and one sending IP (its own) whose transport carries them."""
    by_node = domains_by_node(config)
    certified = acme_names.plan_for_stack(config) if acme_settings.enabled(config) else {}
    host_vars: dict[str, dict[str, Any]] = {}
    for node in inventory:
        name = node["name"]
        domains = by_node.get(name, [])
        if config.mail.flavor == "mailu":
            host_vars[name] = {"mailu_bind_address": node["ip"]}
            continue
        host_vars[name] = {
            "postfix_virtual_domains": domains,
            "postfix_sending_ips": [
                {
                    "name": "main",
                    "address": node["ip"],
                    "helo_name": node.get("fqdn") or name,
                    "domains": domains,
                }
            ],
            "opendkim_domains": domains,
            "dovecot_domains": domains,
        }
        if name in certified:
            host_vars[name]["acme_names"] = certified[name]
    return host_vars


def playbook_vars(config: StackConfig) -> dict[str, Any]:
    mail = config.mail
    if mail.flavor == "mailu":
        return {"mailu_message_size_limit": mail.message_size_limit_mb * 1024 * 1024}
    return {
        "postfix_warmup_stage": mail.warmup_stage,
        "postfix_tls_min_version": mail.tls_min_version,
        "postfix_message_size_limit_mb": mail.message_size_limit_mb,
        "dovecot_tls_min_version": mail.tls_min_version,
        **acme_settings.role_vars(config),
    }


def signing_keys(private_keys: Mapping[str, Mapping[str, str]], selectors: Mapping[str, str]) -> list[dict]:
    """The active key of each domain, as the opendkim role takes it."""
    keys = []
    for domain, selector in sorted(selectors.items()):
        pem = (private_keys.get(domain) or {}).get(selector)
        if pem:
            keys.append({"domain": domain, "selector": selector, "private_key": pem})
    return keys


class MailHosts(pulumi.ComponentResource):
    """Converges the fleet (``inventory``: ``[{name, fqdn, ip, service_id}]``) with the mail playbook."""

    def __init__(
        self,
        name: str,
        config: StackConfig,
        inventory: pulumi.Input[list[dict[str, Any]]],
        mail_dns: Any | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        if acme_settings.enabled(config):
            acme_names.plan_for_stack(config)  # certificate names that cannot work fail before any resource
        super().__init__("penguinmails:ansible:MailHosts", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        hosts = pulumi.Output.from_input(inventory)
        flavor = config.mail.flavor
        if flavor == "mailu":
            key = GeneratedSecret(f"{name}-mailu-secret-key", length=32, alphabet="alnum", opts=child)
            secret_vars: pulumi.Input[dict[str, Any]] = pulumi.Output.all(key.result).apply(
                lambda values: {"mailu_secret_key": values[0]}
            )
        else:
            postmasters = {
                domain.name: GeneratedSecret(f"{name}-postmaster-{domain.name}", length=32, opts=child).result
                for _, domain in config.sending_domains()
            }
            users = pulumi.Output.all(**postmasters).apply(
                lambda passwords: [
                    {"address": f"postmaster@{domain}", "password": password}
                    for domain, password in sorted(passwords.items())
                ]
            )
            keys: pulumi.Input[list] = []
            if mail_dns is not None:
                keys = pulumi.Output.all(mail_dns.dkim_private_keys, mail_dns.dkim_selectors).apply(
                    lambda values: signing_keys(values[0], values[1])
                )
            secret_vars = pulumi.Output.all(users, keys).apply(
                lambda values: {"dovecot_users": values[0], "opendkim_keys": values[1]}
            )
            if acme_settings.enabled(config):
                secret_vars = pulumi.Output.all(secret_vars, acme_settings.tsig_secret_output(config)).apply(
                    lambda values: {**values[0], "acme_tsig_secret": values[1]}
                )
        dev = config.environment == "dev"
        self.playbook = AnsiblePlaybook(
            f"{name}-playbook",
            hosts=hosts,
            playbook="mailu.yml" if flavor == "mailu" else "mailhost.yml",
            vars=playbook_vars(config),
            secret_vars=secret_vars,
            host_vars=hosts.apply(lambda nodes: plan_host_vars(config, nodes)),
            group_vars=DEV_GROUP_VARS if dev else {},
            # Dev hosts are containers that get new host keys when rebuilt; real hosts are pinned on first use.
            connection={"host_key_checking": "off" if dev else "accept-new"},
            opts=child,
        )
        self.host_results = self.playbook.host_results
        self.inventory_path = self.playbook.inventory_path
        self.register_outputs({"host_results": self.host_results, "inventory_path": self.inventory_path})
