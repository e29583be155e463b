"""The record generator: from the stack config and the fleet's addresses to every zone's records.

For each sending domain: A/AAAA of its mail host, MX, SPF (the sending node's IPs plus configured
includes), DKIM for the active selector and for replaced selectors still inside their overlap, DMARC per
RFC 9989 (plus the authorisation record when reports go to another domain we host), MTA-STS
(``_mta-sts`` TXT and the ``mta-sts`` policy host) and TLS-RPT; report addresses default to the stack's
report mailboxes (``mail.reports``, whose domain gets an MX). For each node: its host name's address
records, an SPF record for it as HELO name, and the PTR that confirms it (forward-confirmed reverse DNS); PTRs are also returned on their own
because at a hosting provider they go through its rDNS API, not through a zone we serve.

The generator is pure: give it real addresses and keys, or :data:`PLACEHOLDER` values (what
:class:`~modules.dns.component.MailDns` does before the fleet and keys exist) and substitute later.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

from modules.config import sending_ips
from modules.config.model import SendingDomainConfig, StackConfig
from modules.dns import dkim, dmarc, mailauth, spf
from modules.dns.errors import DnsValidationError
from modules.dns.lookup import Lookup, lookup_for
from modules.dns.records import Record, RecordError, merge, reverse_name, zone_for
from modules.dns.validators import validate_records

PLACEHOLDER_TIME = "2000-01-01T00:00:00+00:00"


@dataclass(frozen=True)
class NodeAddresses:
    ipv4: str | None = None
    ipv6: str | None = None

    def all(self) -> list[str]:
        return [ip for ip in (self.ipv4, self.ipv6) if ip]


def placeholder_addresses(index: int) -> NodeAddresses:
    """Reserved addresses (240.0.0.0/4, 100::/64) no real node has: stand-ins until the fleet exists."""
    return NodeAddresses(f"240.0.{index // 256}.{index % 256}", f"100::{index:x}")


@functools.cache
def placeholder_public_key(bits: int = dkim.MIN_BITS) -> str:
    return dkim.generate_key(bits)[1]


@dataclass(frozen=True)
class DomainExpectation:
    """What verification should find for one sending domain."""

    domain: str
    mail_host: str
    sending_ips: tuple[str, ...]
    dkim_keys: tuple[tuple[str, str], ...]  # (selector, public key base64), active first
    dmarc_policy: str
    tls_rpt: bool = True
    mta_sts: bool = True
    ptr_host: str | None = None
    mta_sts_policy: str | None = None  # the policy text the stack computes (None: not compared)


@dataclass
class MailPlan:
    records: dict[str, list[Record]] = field(default_factory=dict)  # zone → records (merged, sorted)
    ptr: dict[str, str] = field(default_factory=dict)  # sending IP → host name (rDNS)
    node_hostnames: dict[int, str] = field(default_factory=dict)
    mta_sts_policies: dict[str, str] = field(default_factory=dict)
    signing_selectors: dict[str, str] = field(default_factory=dict)
    expectations: list[DomainExpectation] = field(default_factory=list)

    def all_records(self) -> list[Record]:
        return [record for records in self.records.values() for record in records]


def node_hostnames(config: StackConfig) -> dict[int, str]:
    """Each sending node's name (HELO, PTR): ``<name>.<fleet.rdns_domain>``, else the mail host of the
    first domain it sends for."""
    names = config.fleet.node_names()
    hostnames: dict[int, str] = {}
    for index, name in enumerate(names, start=1):
        fqdn = config.fleet.node_fqdn(name)
        if fqdn:
            hostnames[index] = fqdn
    for _, domain in config.sending_domains():
        hostnames.setdefault(domain.sending_node, f"{config.mail.hostname_prefix}.{domain.name}")
    return hostnames


HELO_SPF = "v=spf1 a -all"


def dmarc_rua(config: StackConfig, domain: SendingDomainConfig) -> list[str]:
    """The domain's own ``rua``, else the stack's report mailbox (none when neither is configured)."""
    if domain.dmarc.rua:
        return list(domain.dmarc.rua)
    reports = config.mail.reports
    return [f"mailto:{reports.dmarc_address}"] if reports else []


def tls_rpt_rua(config: StackConfig, domain: str) -> list[str]:
    """``mail.tls_rpt_rua``, else the stack's report mailbox, else ``tlsrpt@<domain>`` (made a mailbox)."""
    if config.mail.tls_rpt_rua:
        return list(config.mail.tls_rpt_rua)
    reports = config.mail.reports
    return [f"mailto:{reports.tls_rpt_address if reports else f'tlsrpt@{domain}'}"]


def mail_nodes(config: StackConfig) -> dict[str, int]:
    """Each domain whose mail the fleet receives → the node whose MX takes it."""
    nodes = {domain.name: domain.sending_node for _, domain in config.sending_domains()}
    if config.mail.reports is not None:
        nodes.setdefault(config.mail.reports.domain, config.mail.reports.node)
    return nodes


def report_mailboxes(config: StackConfig) -> dict[int, list[str]]:
    """Node index → the report addresses (DMARC ``rua``/``ruf``, TLS-RPT) in domains it receives mail for.

    These become real mailboxes on that node, so every report address the stack publishes in a domain
    of its own is deliverable.
    """
    receivers = mail_nodes(config)
    found: dict[int, set[str]] = {}
    for _, domain in config.sending_domains():
        uris = [*dmarc_rua(config, domain), *domain.dmarc.ruf, *tls_rpt_rua(config, domain.name)]
        for uri in uris:
            address = uri.split("!")[0].removeprefix("mailto:").lower()
            if "@" in address and address.rsplit("@", 1)[1] in receivers:
                found.setdefault(receivers[address.rsplit("@", 1)[1]], set()).add(address)
    return {node: sorted(addresses) for node, addresses in sorted(found.items())}


def plan_mail_dns(
    config: StackConfig,
    nodes: Mapping[int, NodeAddresses],
    dkim_public: Mapping[tuple[str, str], str],
    retire_at: Mapping[tuple[str, str], str | None] | None = None,
) -> MailPlan:
    """Every record the config asks for. ``dkim_public`` maps (domain, selector) to the base64 public key;
    ``retire_at`` maps a replaced selector to the time it may go (absent or None: keep it)."""
    retire_at = retire_at or {}
    zones = [zone.name for zone in config.dns.zones]
    ttl = config.dns.ttl
    plan = MailPlan(node_hostnames=node_hostnames(config))
    raw: list[tuple[str, str, int | None, list[str], str | None]] = []  # name, type, ttl, values, not_after
    problems: list[str] = []

    def add(
        name: str, rtype: str, values: list[str], not_after: str | None = None, rr_ttl: int | None = None
    ):
        raw.append((name, rtype, rr_ttl or ttl, values, not_after))

    for index, hostname in plan.node_hostnames.items():
        addresses = nodes.get(index)
        if addresses is None:
            continue
        rdns_domain = config.fleet.rdns_domain
        if rdns_domain and hostname.endswith("." + rdns_domain) and zone_for(hostname, zones):
            if addresses.ipv4:
                add(hostname, "A", [addresses.ipv4])
            if addresses.ipv6:
                add(hostname, "AAAA", [addresses.ipv6])
        if zone_for(hostname, zones):
            # The HELO name gets its own SPF (RFC 7208 2.3): receivers check it for bounces (empty
            # MAIL FROM) and some for every message; ``a`` authorises exactly the node's addresses.
            add(hostname, "TXT", [HELO_SPF])
        for ip in addresses.all():
            plan.ptr[ip] = hostname
            reverse = reverse_name(ip)
            if zone_for(reverse, zones):
                add(reverse, "PTR", [hostname])
        # Additional IPs (fleet.additional_ips): a name of their own each, with A, HELO SPF and PTR (FCrDNS).
        for _, address, extra_host in config.fleet.extra_ips(index):
            if zone_for(extra_host, zones):
                add(extra_host, "A", [address])
                add(extra_host, "TXT", [HELO_SPF])
            plan.ptr[address] = extra_host
            if zone_for(reverse_name(address), zones):
                add(reverse_name(address), "PTR", [extra_host])

    for _, domain in config.sending_domains():
        d = domain.name
        addresses = nodes.get(domain.sending_node)
        if addresses is None:
            problems.append(f"{d}: no address for sending node {domain.sending_node}")
            continue
        host = f"{config.mail.hostname_prefix}.{d}"
        if addresses.ipv4:
            add(host, "A", [addresses.ipv4])
        if addresses.ipv6:
            add(host, "AAAA", [addresses.ipv6])
        add(d, "MX", [f"10 {host}."])
        # SPF names the IP the domain leaves from, then the node's other IPs of its tenant (where the
        # sender routes agent may move it); a stack without additional IPs keeps the node's own.
        ips = sending_ips.tenant_ips(config, domain)
        ipv4s = [ip.address or addresses.ipv4 for ip in ips if ip.address or addresses.ipv4]
        add(
            d,
            "TXT",
            [
                spf.build_spf(
                    ipv4s,
                    [addresses.ipv6] if addresses.ipv6 else [],
                    domain.spf_include,
                    domain.spf_all[0],
                )
            ],
        )
        pinned = ips[0]
        sent_from = (pinned.address,) if pinned.address else tuple(addresses.all())
        ptr_host = pinned.hostname or plan.node_hostnames.get(domain.sending_node)
        keys: list[tuple[str, str]] = []
        for selector in [domain.dkim_selector, *domain.dkim_previous_selectors]:
            public = dkim_public.get((d, selector))
            if public is None:
                problems.append(f"{d}: no DKIM key for selector {selector!r}")
                continue
            keys.append((selector, public))
            not_after = None if selector == domain.dkim_selector else retire_at.get((d, selector))
            add(dkim.dkim_name(selector, d), "TXT", [dkim.dkim_txt(public)], not_after)
        dmarc_value = dmarc.build_dmarc(
            domain.dmarc.policy,
            dmarc_rua(config, domain),
            domain.dmarc.ruf,
            domain.dmarc.subdomain_policy,
            domain.dmarc.adkim,
            domain.dmarc.aspf,
            np=domain.dmarc.np,
            psd=domain.dmarc.psd,
            testing=domain.dmarc.testing,
        )
        add(f"_dmarc.{d}", "TXT", [dmarc_value])
        for report_domain in dmarc.report_domains(dmarc.parse_dmarc(dmarc_value)[0]):
            if dmarc.needs_authorization(d, report_domain) and zone_for(report_domain, zones):
                add(dmarc.authorization_name(d, report_domain), "TXT", ["v=DMARC1"])
        policy = mailauth.mta_sts_policy(config.mail.mta_sts_mode, [host], config.mail.mta_sts_max_age)
        plan.mta_sts_policies[d] = policy
        add(f"_mta-sts.{d}", "TXT", [mailauth.mta_sts_txt(policy)])
        add(f"mta-sts.{d}", "CNAME", [f"{host}."])
        add(
            f"_smtp._tls.{d}",
            "TXT",
            [mailauth.tls_rpt_txt(tls_rpt_rua(config, d))],
        )
        plan.signing_selectors[d] = domain.dkim_selector
        plan.expectations.append(
            DomainExpectation(
                d,
                host,
                sent_from,
                tuple(keys),
                domain.dmarc.policy,
                ptr_host=ptr_host,
                mta_sts_policy=policy,
            )
        )

    reports = config.mail.reports
    if reports is not None and reports.domain not in {dom.name for _, dom in config.sending_domains()}:
        # The report domain receives mail on its node: an MX to a mail host of its own.
        addresses = nodes.get(reports.node)
        if addresses is None:
            problems.append(f"mail.reports: no address for node {reports.node}")
        else:
            host = f"{config.mail.hostname_prefix}.{reports.domain}"
            if addresses.ipv4:
                add(host, "A", [addresses.ipv4])
            if addresses.ipv6:
                add(host, "AAAA", [addresses.ipv6])
            add(reports.domain, "MX", [f"10 {host}."])

    for zone in config.dns.zones:
        for extra in zone.records:
            name = zone.name if extra.name == "@" else f"{extra.name.rstrip('.')}.{zone.name}"
            add(name, extra.type, list(extra.values), rr_ttl=extra.ttl)

    built: list[Record] = []
    for name, rtype, rr_ttl, values, not_after in raw:
        try:
            built.append(Record.make(name, rtype, rr_ttl, values, not_after))
        except RecordError as exc:
            problems.append(str(exc))
    by_zone: dict[str, list[Record]] = {zone: [] for zone in zones}
    for record in built:
        zone = zone_for(record.name, zones)
        if zone is None:
            problems.append(f"{record.name} {record.type}: no zone in dns.zones contains it")
            continue
        by_zone[zone].append(record)
    for zone, records in by_zone.items():
        try:
            plan.records[zone] = merge(records)
        except RecordError as exc:
            problems.append(f"{zone}: {exc}")
    if problems:
        raise DnsValidationError("DNS records from the stack config", problems)
    return plan


def placeholder_plan(config: StackConfig, ipv6_nodes: frozenset[int] = frozenset()) -> MailPlan:
    """The plan with stand-in addresses and keys: everything that does not depend on them is final."""
    indexes = {domain.sending_node for _, domain in config.sending_domains()}
    indexes |= set(range(1, config.fleet.nodes + 1))
    nodes = {}
    for index in indexes:
        stand_in = placeholder_addresses(index)
        nodes[index] = NodeAddresses(stand_in.ipv4, stand_in.ipv6 if index in ipv6_nodes else None)
    public = placeholder_public_key(config.mail.dkim_key_bits)
    keys = {
        (domain.name, selector): public
        for _, domain in config.sending_domains()
        for selector in [domain.dkim_selector, *domain.dkim_previous_selectors]
    }
    return plan_mail_dns(config, nodes, keys)


def check_mail_dns(
    config: StackConfig, lookup: Lookup | None = None, ipv6_nodes: frozenset[int] = frozenset()
) -> MailPlan:
    """Validate everything the config makes before any resource is declared; raise once with every reason.

    Names outside the plan (SPF includes, foreign MX hosts) are resolved with ``lookup``, by default the
    resolvers in ``dns.resolvers``.
    """
    plan = placeholder_plan(config, ipv6_nodes)
    if lookup is None:
        lookup = lookup_for(config.dns.resolvers or None)
    reasons = validate_records(plan.all_records(), lookup, zones=list(plan.records))
    if reasons:
        raise DnsValidationError("DNS records from the stack config", reasons)
    return plan
