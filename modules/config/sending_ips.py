"""Sending IPs per fleet node: the main IP and the additional ones an operator bought in the portal.

No source shows a Hostwinds API action that buys an IPv4, so the operator buys it for a server in the
portal and declares it in ``fleet.additional_ips`` (node index → addresses); the stack then proves it is
assigned to that instance (``modules.hostwinds.additional_ips``) before anything uses it. A sending domain
picks one IP of its node with ``sending_ip`` (``main`` by default, ``ip2``… or the address itself).

The checks here are plain functions so the config model stays small: each returns the value or raises
``ValueError`` (field checks), or lists every reason at once naming its key (the cross-section check).
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # the model imports this module
    from modules.config.model import SendingDomainConfig, StackConfig

MAIN = "main"
_NAME_RE = re.compile(r"^ip([2-9]|[1-9][0-9])$")


class SendingIp(NamedTuple):
    """One IP a node sends from; ``address``/``hostname`` are None for the main IP (known from the fleet)."""

    name: str
    address: str | None
    hostname: str | None


def check_additional_ips(value: dict[int, list[str]]) -> dict[int, list[str]]:
    """Each address a public-format IPv4 (no network, loopback or multicast), none declared twice."""
    seen: dict[str, int] = {}
    reasons = []
    for index, addresses in sorted(value.items()):
        if index < 1:
            reasons.append(f"[{index}]: node indexes start at 1 (like sending_node)")
        for position, address in enumerate(addresses):
            try:
                ip = ipaddress.IPv4Address(address)
            except ValueError:
                reasons.append(f"[{index}][{position}]: {address!r} is not an IPv4 address")
                continue
            if ip.is_loopback or ip.is_multicast or ip.is_unspecified or ip.is_link_local:
                reasons.append(f"[{index}][{position}]: {address} cannot be a sending address")
            if str(ip) in seen:
                reasons.append(
                    f"[{index}][{position}]: {ip} is already declared for node {seen[str(ip)]}; an address "
                    "belongs to one server"
                )
            seen.setdefault(str(ip), index)
    if reasons:
        raise ValueError("; ".join(reasons))
    return {index: [str(ipaddress.IPv4Address(a)) for a in addresses] for index, addresses in value.items()}


def check_sending_ip(value: str | None) -> str | None:
    if value is None or value == MAIN or _NAME_RE.match(value):
        return value
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(
            f"{value!r} is not 'main', an additional IP's name (ip2, ip3, …) or an IPv4 address"
        ) from None


def node_sending_ips(config: StackConfig, index: int) -> list[SendingIp]:
    """Node ``index``'s sending IPs, main first."""
    return [SendingIp(MAIN, None, None)] + [SendingIp(*ip) for ip in config.fleet.extra_ips(index)]


def pinned_ip(config: StackConfig, domain: SendingDomainConfig) -> SendingIp:
    """The IP ``domain`` leaves from (main unless ``sending_ip`` names one of its node's others)."""
    for ip in node_sending_ips(config, domain.sending_node):
        if domain.sending_ip in (ip.name, ip.address) and domain.sending_ip is not None:
            return ip
    return SendingIp(MAIN, None, None)


def tenant_ips(config: StackConfig, domain: SendingDomainConfig) -> list[SendingIp]:
    """The IPs ``domain`` may leave from: its own first, then its node's other IPs that carry a domain of
    the same tenant (the sender routes agent moves a quarantined IP's domains there, so SPF names them)."""
    own = pinned_ip(config, domain)
    tenant = next(t for t, d in config.sending_domains() if d is domain)
    others = {
        pinned_ip(config, d).name
        for t, d in config.sending_domains()
        if t.slug == tenant.slug and d.sending_node == domain.sending_node
    }
    rest = [ip for ip in node_sending_ips(config, domain.sending_node) if ip.name in others - {own.name}]
    return [own, *rest]


def sending_ip_reasons(config: StackConfig) -> list[str]:
    """Cross-section checks: declared nodes exist and have PTR names; pins name an IP of their own node."""
    fleet = config.fleet
    reasons = []
    for index in sorted(fleet.additional_ips):
        if index > fleet.nodes:
            reasons.append(
                f"fleet.additional_ips[{index}]: node {index} does not exist (fleet.nodes is {fleet.nodes})"
            )
        elif fleet.additional_ips[index] and not fleet.rdns_domain:
            reasons.append(
                f"fleet.additional_ips[{index}]: needs fleet.rdns_domain (each IP's PTR is <node>-<n>.<rdns_domain>)"
            )
    for tenant, domain in config.sending_domains():
        if domain.sending_ip in (None, MAIN) or domain.sending_node > fleet.nodes:
            continue
        ips = node_sending_ips(config, domain.sending_node)
        if not any(domain.sending_ip in (ip.name, ip.address) for ip in ips):
            known = ", ".join(ip.name if ip.address is None else f"{ip.name} ({ip.address})" for ip in ips)
            reasons.append(
                f"tenants[{tenant.slug}].domains[{domain.name}].sending_ip: {domain.sending_ip} is not an IP of "
                f"its sending node {domain.sending_node} (that node has: {known})"
            )
    return reasons
