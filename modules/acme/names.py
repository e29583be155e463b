"""Which names each mail host's certificate covers, planned from the stack config before anything changes.

One certificate per host (one certbot lineage, named after the host): its node name, then ``mail.<d>``
and ``mta-sts.<d>`` for every domain the host sends for. One certificate with many names rather than one
per name because Postfix and Dovecot then need a single ``cert``/``key`` pair and no SNI maps, a host
renews in one ACME order, and the MTA-STS web server reads the same files. The cost is Let's Encrypt's
limit of 100 names per certificate (a host sends for at most 49 domains) and that every name of a host
is re-validated when one changes; both are checked here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from modules.config.model import HOSTNAME_RE, StackConfig
from modules.errors import ValidationError

# Let's Encrypt's limit of names on one certificate.
MAX_NAMES = 100
# Where the TXT records of DNS-01 go; the narrow ACME TSIG key may only write there.
CHALLENGE_LABEL = "_acme-challenge"


def host_names(hostname: str, domains: Iterable[str]) -> list[str]:
    """The names one host's certificate covers, in a stable order: the node name first."""
    names = [hostname.rstrip(".").lower()]
    for domain in sorted({d.rstrip(".").lower() for d in domains}):
        names += [f"mail.{domain}", f"mta-sts.{domain}"]
    return list(dict.fromkeys(names))


def challenge_names(names: Iterable[str]) -> list[str]:
    """The ``_acme-challenge.<name>`` owner names DNS-01 writes for ``names``."""
    return [f"{CHALLENGE_LABEL}.{name}" for name in names]


def plan_names(
    hostnames: Mapping[str, str], domains_by_node: Mapping[str, Iterable[str]], zones: Iterable[str]
) -> dict[str, list[str]]:
    """Node → names of its certificate; every problem (bad name, no zone, too many names) at once.

    ``zones`` are the zones the ACME key may update: a name outside all of them could never be validated.
    """
    zone_list = [z.rstrip(".").lower() for z in zones]
    plan: dict[str, list[str]] = {}
    reasons: list[str] = []
    for node, hostname in sorted(hostnames.items()):
        if not hostname:
            reasons.append(f"{node}: no fully qualified name (set fleet.rdns_domain)")
            continue
        names = host_names(hostname, domains_by_node.get(node, []))
        for name in names:
            if not HOSTNAME_RE.match(name):
                reasons.append(f"{node}: {name!r} is not a valid DNS name")
            elif not any(name == z or name.endswith("." + z) for z in zone_list):
                reasons.append(f"{node}: {name} lies in no zone of dns.zones (DNS-01 could not be answered)")
        if len(names) > MAX_NAMES:
            reasons.append(
                f"{node}: {len(names)} names on one certificate, more than the CA's limit of {MAX_NAMES} "
                f"(move domains to another node)"
            )
        plan[node] = names
    if reasons:
        raise ValidationError("mail.acme certificate names", reasons)
    return plan


def plan_for_stack(config: StackConfig) -> dict[str, list[str]]:
    """The certificate names of every fleet node of ``config`` (node names from the fleet, fqdn by rDNS)."""
    from modules.ansible.mailhosts import domains_by_node

    fleet = config.fleet
    hostnames = {node: fleet.node_fqdn(node) or "" for node in fleet.node_names()}
    return plan_names(hostnames, domains_by_node(config), [zone.name for zone in config.dns.zones])
