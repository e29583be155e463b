"""``MailHosts``: the fleet converged with the mail roles, as part of ``pulumi up``.

The stack's config decides the flavor (``mail.flavor``: native roles or MailU, one for the whole fleet),
which node sends for which tenant domain (``sending_node``), the warm-up stage and TLS floor. The fleet's
inventory output (ready nodes with IPs) and the DNS component's DKIM keys (secret; the selectors resolve
only once the records are published) feed one :class:`AnsiblePlaybook` per node (a dead node fails only
its own; refresh checks each host in check mode, :mod:`modules.ansible.per_host`), so hosts never sign with a key
that is not in DNS yet; its MTA-STS policies go to each host's policy server (role ``mta_sts``). Each
domain gets a ``postmaster@`` mailbox with a generated password, and every report address the DNS
publishes in a domain of ours (``mail.reports``, ``tlsrpt@<domain>``) a mailbox on the node that receives
that domain's mail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pulumi

from modules.acme import names as acme_names
from modules.acme import settings as acme_settings
from modules.ansible import per_host
from modules.config import sending_ips
from modules.config.model import StackConfig
from modules.config.warmup import start_caps
from modules.dns import generate
from modules.reputation.warmup import PROVIDER_DOMAINS
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


def receiving_domains_by_node(config: StackConfig) -> dict[str, list[str]]:
    """Fleet node name → every domain whose mail it takes: the ones it sends for and the report domain."""
    names = config.fleet.node_names()
    found: dict[str, set[str]] = {name: set() for name in names}
    for domain, index in generate.mail_nodes(config).items():
        if 1 <= index <= len(names):
            found[names[index - 1]].add(domain)
    return {name: sorted(domains) for name, domains in found.items()}


def report_mailbox_addresses(config: StackConfig) -> list[str]:
    """The report mailboxes (DMARC rua/ruf, TLS-RPT) the stack creates, so published addresses deliver."""
    return sorted({a for addresses in generate.report_mailboxes(config).values() for a in addresses})


def postmaster_address(domain: str) -> str:
    """The one mailbox the stack makes per domain (its login is the address)."""
    return f"postmaster@{domain}"


def tenant_domains_by_node(config: StackConfig) -> dict[str, dict[str, list[str]]]:
    """Fleet node name → tenant slug → that tenant's domains sent from the node."""
    names = config.fleet.node_names()
    found: dict[str, dict[str, list[str]]] = {name: {} for name in names}
    for tenant, domain in config.sending_domains():
        if 1 <= domain.sending_node <= len(names):
            found[names[domain.sending_node - 1]].setdefault(tenant.slug, []).append(domain.name)
    return {name: {slug: sorted(d) for slug, d in tenants.items()} for name, tenants in found.items()}


def plan_sender_logins(
    domains_by_tenant: Mapping[str, Iterable[str]], mailboxes: Iterable[str]
) -> list[dict[str, Any]]:
    """Per login (mailbox address) on one host: the domains it may send as, envelope and ``From:``.

    A mailbox of tenant T may use any address of T's domains on the host and nothing of another tenant;
    a mailbox whose domain belongs to no tenant on the host gets no entry, so it may send as nothing.
    The postfix role turns this into ``smtpd_sender_login_maps``, which the sender milter also reads.
    """
    tenant_of: dict[str, str] = {}
    for tenant, domains in domains_by_tenant.items():
        for domain in domains:
            domain = domain.lower()
            if tenant_of.setdefault(domain, tenant) != tenant:
                raise ValueError(
                    f"domain {domain} belongs to tenants {tenant_of[domain]!r} and {tenant!r}: "
                    "a domain has one owner"
                )
    plan = []
    for login in sorted({m.lower() for m in mailboxes}):
        tenant = tenant_of.get(login.rpartition("@")[2])
        if tenant is not None:
            own = sorted(d for d, t in tenant_of.items() if t == tenant)
            plan.append({"login": login, "domains": own})
    return plan


def inet_protocols(node: Mapping[str, Any]) -> str:
    """Postfix's families: IPv6 too only when the node has an IPv6 address (which DNS then publishes).

    SPF and PTR cover the node's IPv4 address; listening or sending over IPv6 without them fails SPF and
    FCrDNS at receivers.
    """
    return "all" if node.get("ipv6") else "ipv4"


def alert_sender(config: StackConfig) -> str | None:
    """The monitoring host's alert mail login (``monitoring.vps.email_from``), a mailbox on the node that
    sends for its domain, or None when alerts go by webhook only."""
    vps = config.monitoring.vps
    if vps is None or not vps.email_to or config.monitoring.deploy_for(config.environment) != "vps":
        return None
    return vps.email_from


def sending_ip_entries(
    config: StackConfig, node: Mapping[str, Any], domains: list[str]
) -> list[dict[str, Any]]:
    """The node's ``postfix_sending_ips``: its main IP, then each proven additional IP (the inventory's
    ``additional_ips``), every domain on the IP it is pinned to (``sending_ip``; default main)."""
    pins = {d.name: sending_ips.pinned_ip(config, d).name for _, d in config.sending_domains()}
    extras = list(node.get("additional_ips") or [])
    names = {ip["name"] for ip in extras}
    entries = [
        {"name": "main", "address": node["ip"], "helo_name": node.get("fqdn") or node["name"], "domains": []},
        *(
            {"name": ip["name"], "address": ip["address"], "helo_name": ip["fqdn"], "domains": []}
            for ip in extras
        ),
    ]
    by_name = {entry["name"]: entry for entry in entries}
    for domain in domains:
        pin = pins.get(domain, sending_ips.MAIN)
        by_name[pin if pin in names else "main"]["domains"].append(domain)
    return entries


def plan_host_vars(
    config: StackConfig,
    inventory: list[Mapping[str, Any]],
    mta_sts_policies: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per host: its domains, its sending IPs (main and proven additional ones) with their domains, who may
    send as what there, the address families Postfix may use, the MTA-STS policy text of each of its domains
    (``MailDns.mta_sts_policies``) for its policy host, and the warm-up caps of the plan's start day for each
    IP that sends (so a fresh host is capped from its first converge; the sender routes agent moves them on
    from there: each IP has its own plan)."""
    by_node = domains_by_node(config)
    receiving = receiving_domains_by_node(config)
    tenants_by_node = tenant_domains_by_node(config)
    policies = mta_sts_policies or {}
    certified = acme_names.plan_for_stack(config) if acme_settings.enabled(config) else {}
    caps = start_caps(config)
    host_vars: dict[str, dict[str, Any]] = {}
    for node in inventory:
        name = node["name"]
        domains = by_node.get(name, [])
        if config.mail.flavor == "mailu":
            host_vars[name] = {"mailu_bind_address": node["ip"], "mailu_domains": receiving.get(name, [])}
            continue
        host_vars[name] = {
            "postfix_virtual_domains": domains,
            "postfix_sending_ips": sending_ip_entries(config, node, domains),
            "opendkim_domains": domains,
            "dovecot_domains": domains,
            "postfix_sender_logins": plan_sender_logins(
                tenants_by_node.get(name, {}),
                [postmaster_address(d) for d in domains]
                + [a for a in [alert_sender(config)] if a and a.rpartition("@")[2] in domains],
            ),
            "postfix_inet_protocols": inet_protocols(node),
            # The proven additional IPs must be on the host for Postfix to bind to them (common role).
            "common_additional_addresses": [ip["address"] for ip in node.get("additional_ips") or []],
            "mta_sts_policies": {domain: policies[domain] for domain in domains if domain in policies},
            # The sender routes agent moves a quarantined IP's domain only to an IP of the same tenant.
            "postfix_sender_routes_tenants": {
                domain: slug for slug, owned in tenants_by_node.get(name, {}).items() for domain in owned
            },
        }
        sending = [ip for ip in host_vars[name]["postfix_sending_ips"] if ip["domains"]]
        if caps is not None and sending:  # an IP without domains sends nothing: no cap to enforce
            for ip in sending:
                ip.update({"warmup_stage": min(caps.day, 21), "hourly_cap": caps.hourly})
            host_vars[name]["postfix_warmup_daily_caps"] = [
                {"name": ip["name"], "daily_cap": caps.daily, "provider_caps": dict(caps.providers)}
                for ip in sending
            ]
        if receiving.get(name, domains) != domains:  # the report domain: received here, never sent from
            host_vars[name]["postfix_virtual_domains"] = receiving[name]
            host_vars[name]["dovecot_domains"] = receiving[name]
        if name in certified:
            host_vars[name]["acme_names"] = certified[name]
    return host_vars


def playbook_vars(config: StackConfig) -> dict[str, Any]:
    mail = config.mail
    if mail.flavor == "mailu":
        selectors = {domain.dkim_selector for _, domain in config.sending_domains()}
        return {
            "mailu_message_size_limit": mail.message_size_limit_mb * 1024 * 1024,
            # MailU signs every domain with one selector: the one the DNS publishes (the config
            # refuses a MailU stack whose domains use different ones).
            **({"mailu_dkim_selector": selectors.pop()} if len(selectors) == 1 else {}),
        }
    return {
        "postfix_warmup_stage": mail.warmup_stage,
        # The plan's receiver groups, so the hosts' provider caps count the same domains the plan means.
        "postfix_warmup_provider_domains": {group: list(d) for group, d in PROVIDER_DOMAINS.items()},
        "postfix_tls_min_version": mail.tls_min_version,
        "postfix_message_size_limit_mb": mail.message_size_limit_mb,
        "dovecot_tls_min_version": mail.tls_min_version,
        **acme_settings.role_vars(config),
    }


def monitoring_agent_vars(enabled: bool, allowed_sources: Iterable[str] = ()) -> dict[str, Any]:
    """The monitoring_agent role's switch and the addresses its exporters' ports are open to.

    The monitoring host (dev: the podman bridge's gateway, where the devenv Prometheus runs; production:
    the monitoring VPS) is the only source the firewall lets reach node exporter and postfix exporter.
    """
    return {
        "monitoring_agent_enabled": enabled,
        "monitoring_agent_allowed_sources": sorted({str(source) for source in allowed_sources}),
    }


def sender_routes_vars(url: str | None, interval: int) -> dict[str, Any]:
    """The postfix role's sender routes agent: the endpoint it polls (empty: no agent) and how often."""
    return {"postfix_sender_routes_url": url or "", "postfix_sender_routes_interval": interval}


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
        *,
        monitoring_enabled: bool = True,
        monitoring_sources: pulumi.Input[list[str]] | None = None,
        sender_routes_url: pulumi.Input[str] | None = None,
        sender_routes_token: pulumi.Input[str] | None = None,
    ):
        if acme_settings.enabled(config):
            acme_names.plan_for_stack(config)  # certificate names that cannot work fail before any resource
        super().__init__("penguinmails:ansible:MailHosts", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        hosts = pulumi.Output.from_input(inventory)
        flavor = config.mail.flavor
        # Both flavors get the same mailboxes and the DNS component's DKIM keys.
        postmasters = {
            domain.name: GeneratedSecret(f"{name}-postmaster-{domain.name}", length=32, opts=child).result
            for _, domain in config.sending_domains()
        }
        reports = {
            address: GeneratedSecret(
                f"{name}-report-{address.replace('@', '-at-')}", length=32, opts=child
            ).result
            for address in report_mailbox_addresses(config)
        }
        # The monitoring host's alert mail login (monitoring.vps.email_from), when it has one.
        self.alert_password: pulumi.Output[str] | None = None
        sender = alert_sender(config)
        if sender:
            reports[sender] = GeneratedSecret(f"{name}-alert-login", length=32, opts=child).result
            self.alert_password = reports[sender]
        users = pulumi.Output.all(postmasters, reports).apply(
            lambda passwords: (
                [
                    {"address": postmaster_address(domain), "password": password}
                    for domain, password in sorted(passwords[0].items())
                ]
                + [
                    {"address": address, "password": password}
                    for address, password in sorted(passwords[1].items())
                ]
            )
        )
        keys: pulumi.Input[list] = []
        if mail_dns is not None:
            keys = pulumi.Output.all(mail_dns.dkim_private_keys, mail_dns.dkim_selectors).apply(
                lambda values: signing_keys(values[0], values[1])
            )
        if flavor == "mailu":
            # The same keys the DNS publishes, imported into MailU with its config-import.
            key = GeneratedSecret(f"{name}-mailu-secret-key", length=32, alphabet="alnum", opts=child)
            secret_vars: pulumi.Input[dict[str, Any]] = pulumi.Output.all(key.result, users, keys).apply(
                lambda values: {
                    "mailu_secret_key": values[0],
                    "mailu_users": values[1],
                    "mailu_dkim_keys": values[2],
                }
            )
        else:
            secret_vars = pulumi.Output.all(users, keys).apply(
                lambda values: {"dovecot_users": values[0], "opendkim_keys": values[1]}
            )
            if acme_settings.enabled(config):
                secret_vars = pulumi.Output.all(secret_vars, acme_settings.tsig_secret_output(config)).apply(
                    lambda values: {**values[0], "acme_tsig_secret": values[1]}
                )
            if sender_routes_url and sender_routes_token is not None:
                secret_vars = pulumi.Output.all(secret_vars, sender_routes_token).apply(
                    lambda values: {**values[0], "postfix_sender_routes_token": values[1]}
                )
        dev = config.environment == "dev"
        policies = dict(getattr(mail_dns, "mta_sts_policies", None) or {})
        # Native hosts run the monitoring agent (MailU hosts do not have it); its firewall opens the
        # exporters to the monitoring host only, whose address the monitoring component gives.
        play_vars: pulumi.Input[dict[str, Any]] = playbook_vars(config)
        if flavor != "mailu":
            play_vars = pulumi.Output.all(monitoring_sources or [], sender_routes_url).apply(
                lambda values: {
                    **playbook_vars(config),
                    **monitoring_agent_vars(monitoring_enabled, values[0]),
                    **sender_routes_vars(
                        values[1] if sender_routes_token is not None else None,
                        5 if dev else 30,
                    ),
                }
            )
        # One resource per node: a dead node fails only its own resource, refresh checks each host.
        self.playbooks = per_host.host_playbooks(
            name,
            config.fleet.node_names(),
            hosts,
            host_vars=hosts.apply(lambda nodes: plan_host_vars(config, nodes, policies)),
            playbook="mailu.yml" if flavor == "mailu" else "mailhost.yml",
            vars=play_vars,
            secret_vars=secret_vars,
            group_vars=DEV_GROUP_VARS if dev else {},
            # Dev hosts are containers that get new host keys when rebuilt; real hosts are pinned on first use.
            connection={"host_key_checking": "off" if dev else "accept-new"},
            opts=child,
        )
        self.playbook = next(
            iter(self.playbooks.values())
        )  # the first node's (tests, callers waiting on one)
        self.host_results = per_host.merged_results(self.playbooks)
        self.inventory_path = self.playbook.inventory_path
        self.register_outputs({"host_results": self.host_results, "inventory_path": self.inventory_path})
