"""Where each sending domain sends while some of its tenant's IPs are quarantined: a pure plan.

A domain keeps its assigned IP unless that IP is quarantined (or unknown, or another tenant's). Then it
moves to a warmed, unquarantined IP of its own tenant (the one with the fewest domains planned so far, so
one quarantine does not pile every domain onto one IP), or pauses (``None``) when its tenant has none left.
It never moves onto a warming or unwarmed IP: a cold IP taking a listed IP's whole volume would be burned
next. Once the listing clears, the IP is 'warming' again and its domains come back to it.

This is the fleet-wide view (OLTP's assignments, every tenant's IPs). What the hosts apply is each host's
own slice of the same rules: the postfix role's sender routes agent moves a quarantined IP's domains to a
warmed IP of the tenant on that host, or pauses them (ansible/roles/postfix/files/opt/penguinmails/
sender_routes.py); moving a domain to another host's IP needs the platform's submission to follow it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

QUARANTINED = "quarantined"
WARMED = "warmed"


@dataclass(frozen=True)
class Assignment:
    domain: str
    tenant: str
    ip: str


@dataclass(frozen=True)
class IpState:
    """An IP's owner tenant and its ``fleet.smtp_ip_addresses.status`` (warmed, warming, quarantined …)."""

    tenant: str
    status: str

    @property
    def quarantined(self) -> bool:
        return self.status == QUARANTINED

    @property
    def takes_moved_domains(self) -> bool:
        return self.status == WARMED


def plan_transports(
    assignments: Iterable[Assignment], ip_states: Mapping[str, IpState]
) -> dict[str, str | None]:
    """``{domain: ip or None (paused)}`` for every assigned domain; see the module docstring for the rules."""
    assignments = sorted(assignments, key=lambda a: (a.tenant, a.domain))
    domains = [a.domain for a in assignments]
    twice = sorted({d for d in domains if domains.count(d) > 1})
    if twice:
        raise ValueError(f"domain assigned more than once: {', '.join(twice)}")
    load: dict[str, int] = {}
    plan: dict[str, str | None] = {}
    moving: list[Assignment] = []
    for a in assignments:
        state = ip_states.get(a.ip)
        if state is not None and state.tenant == a.tenant and not state.quarantined:
            plan[a.domain] = a.ip
            load[a.ip] = load.get(a.ip, 0) + 1
        else:
            moving.append(a)
    for a in moving:
        targets = sorted(ip for ip, s in ip_states.items() if s.tenant == a.tenant and s.takes_moved_domains)
        if not targets:
            plan[a.domain] = None
            continue
        target = min(targets, key=lambda ip: (load.get(ip, 0), ip))
        plan[a.domain] = target
        load[target] = load.get(target, 0) + 1
    return plan


def sending_ip_domains(plan: Mapping[str, str | None]) -> tuple[dict[str, list[str]], list[str]]:
    """The plan as the postfix role needs it: domains per IP (each IP's ``postfix_sending_ips[].domains``)
    and the paused domains (no transport of their own)."""
    by_ip: dict[str, list[str]] = {}
    paused: list[str] = []
    for domain, ip in sorted(plan.items()):
        if ip is None:
            paused.append(domain)
        else:
            by_ip.setdefault(ip, []).append(domain)
    return by_ip, paused
