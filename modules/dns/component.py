"""``MailDns``: every sending domain's DNS and email-authentication records, one record set per zone.

The component validates the whole plan first (with stand-in addresses and keys, see
:func:`~modules.dns.generate.check_mail_dns`), so bad config fails the preview before anything is
declared. Then it makes one :class:`DkimKey` per (domain, selector) and one :class:`DnsRecordSet` per
zone, whose values are the generated records with the fleet's real addresses and keys filled in leaf by
leaf: a preview before the fleet exists still shows and checks every record that does not depend on it.

Outputs for the mail hosts (issue 6): ``dkim_private_keys`` (secret, ``{domain: {selector: PEM}}``),
``dkim_selectors`` (the signing selector per domain; resolves only after the records are published, so a
host that waits on it never signs with an unpublished key), ``mta_sts_policies`` and ``ptr_records``
(``{ip: host}``, for the provider's rDNS).
"""

from __future__ import annotations

from collections.abc import Mapping

import pulumi

from modules.config.model import StackConfig
from modules.dns import dkim
from modules.dns.errors import DnsValidationError
from modules.dns.generate import MailPlan, check_mail_dns, placeholder_addresses
from modules.dns.lookup import Lookup
from modules.dns.records import Record, in_zone, reverse_name, zone_for
from modules.dns.resources import DkimKey, DnsRecordSet


def _is_reverse(zone: str) -> bool:
    return zone.endswith(".in-addr.arpa") or zone.endswith(".ip6.arpa")


class MailDns(pulumi.ComponentResource):
    """DNS for every tenant's sending domains; ``node_ips`` maps 1-based fleet node index → IPv4."""

    def __init__(
        self,
        name: str,
        config: StackConfig,
        node_ips: Mapping[int, pulumi.Input[str]],
        node_ipv6s: Mapping[int, pulumi.Input[str]] | None = None,
        lookup: Lookup | None = None,
        opts: pulumi.ResourceOptions | None = None,
        proven_ips: Mapping[str, pulumi.Input[str]] | None = None,
    ):
        """``proven_ips``: each additional IP (fleet.additional_ips) → an Output of the same address that
        resolves once the fleet has proven it is the node's, so no record names it before that."""
        super().__init__("penguinmails:dns:MailDns", name, None, opts)
        node_ipv6s = dict(node_ipv6s or {})
        missing = sorted({d.sending_node for _, d in config.sending_domains()} - set(node_ips))
        if missing:
            raise pulumi.RunError(f"MailDns[{name}]: no address for sending node(s) {missing} (node_ips)")
        try:
            plan = check_mail_dns(config, lookup, ipv6_nodes=frozenset(node_ipv6s))
        except DnsValidationError as error:
            raise pulumi.RunError(error.message) from None
        child = pulumi.ResourceOptions(parent=self)

        # Stand-in address → the node's real address (an Output until the fleet exists).
        addresses: dict[str, pulumi.Input[str]] = {}
        for index in plan.node_hostnames.keys() | {d.sending_node for _, d in config.sending_domains()}:
            stand_in = placeholder_addresses(index)
            if index in node_ips:
                addresses[stand_in.ipv4] = node_ips[index]
            if index in node_ipv6s:
                addresses[stand_in.ipv6] = node_ipv6s[index]
        addresses.update(proven_ips or {})

        self.dkim_keys: dict[tuple[str, str], DkimKey] = {}
        for _, domain in config.sending_domains():
            for selector in [domain.dkim_selector, *domain.dkim_previous_selectors]:
                self.dkim_keys[(domain.name, selector)] = DkimKey(
                    f"{name}-dkim-{selector}-{domain.name}",
                    domain=domain.name,
                    selector=selector,
                    bits=config.mail.dkim_key_bits,
                    opts=child,
                )
        retire: dict[str, pulumi.Output[str]] = {}
        overlap = config.mail.dkim_rotation_overlap_days
        for _, domain in config.sending_domains():
            active = self.dkim_keys[(domain.name, domain.dkim_selector)]
            for selector in domain.dkim_previous_selectors:
                retire[dkim.dkim_name(selector, domain.name)] = active.created_at.apply(
                    lambda created: dkim.retire_at(created, overlap)
                )

        self.record_sets: dict[str, DnsRecordSet] = {}
        for zone in config.dns.zones:
            records = [self._entry(r, addresses, retire) for r in plan.records.get(zone.name, [])]
            if _is_reverse(zone.name):
                records = self._with_ptrs(
                    zone.name, records, plan, addresses, [z.name for z in config.dns.zones]
                )
            self.record_sets[zone.name] = DnsRecordSet(
                f"{name}-zone-{zone.name}",
                zone=zone.name,
                records=records,
                server=zone.server,
                port=zone.port,
                tsig_key_name=zone.tsig_key_name,
                tsig_algorithm=zone.tsig_algorithm,
                max_change_share=zone.max_change_share,
                adopt_existing=zone.adopt_existing,
                resolvers=list(config.dns.resolvers),
                default_ttl=config.dns.ttl,
                backend=zone.backend,
                route53_zone_id=zone.route53_zone_id,
                opts=child,
            )

        published = pulumi.Output.all(*[rs.id for rs in self.record_sets.values()])
        self.dkim_selectors: pulumi.Output[dict[str, str]] = published.apply(
            lambda _: dict(plan.signing_selectors)
        )
        by_domain: dict[str, dict[str, pulumi.Output[str]]] = {}
        public: dict[str, dict[str, pulumi.Output[str]]] = {}
        for (domain, selector), key in self.dkim_keys.items():
            by_domain.setdefault(domain, {})[selector] = key.private_key_pem
            public.setdefault(domain, {})[selector] = key.public_key
        self.dkim_private_keys = pulumi.Output.secret(by_domain)
        self.dkim_public_keys = pulumi.Output.from_input(public)
        self.mta_sts_policies = dict(plan.mta_sts_policies)
        self.node_hostnames = {str(index): host for index, host in plan.node_hostnames.items()}
        self.ptr_records = pulumi.Output.all(
            *[pulumi.Output.all(addresses[ip], host) for ip, host in plan.ptr.items() if ip in addresses]
        ).apply(lambda pairs: {ip: host for ip, host in pairs})
        self.verification = self._expectations(plan, addresses)
        self.register_outputs(
            {
                "dkim_selectors": self.dkim_selectors,
                "dkim_private_keys": self.dkim_private_keys,
                "mta_sts_policies": self.mta_sts_policies,
                "ptr_records": self.ptr_records,
            }
        )

    @staticmethod
    def _value(value: str, addresses: Mapping[str, pulumi.Input[str]]) -> pulumi.Input[str]:
        """Fill stand-in addresses in a value (a whole A/AAAA value or ``ip4:``/``ip6:`` SPF terms)."""
        terms = value.split(" ")
        slots = []
        for position, term in enumerate(terms):
            prefix, _, rest = term.partition(":") if term.startswith(("ip4:", "ip6:")) else ("", "", term)
            address = rest if prefix in ("ip4", "ip6") else term
            if address in addresses:
                slots.append((position, f"{prefix}:" if prefix else "", addresses[address]))
        if not slots:
            return value
        if len(terms) == 1 and not slots[0][1]:
            return slots[0][2]

        def fill(real: list[str]) -> str:
            out = list(terms)
            for (position, prefix, _), address in zip(slots, real, strict=True):
                out[position] = prefix + address
            return " ".join(out)

        return pulumi.Output.all(*[slot[2] for slot in slots]).apply(fill)

    def _entry(self, record: Record, addresses, retire) -> dict:
        entry: dict = {"name": record.name, "type": record.type, "ttl": record.ttl}
        key = self._dkim_key_for(record.name)
        if key is not None:
            entry["values"] = [key.dns_value]
        else:
            entry["values"] = [self._value(value, addresses) for value in record.values]
        if record.name in retire:
            entry["not_after"] = retire[record.name]
        return entry

    def _dkim_key_for(self, name: str) -> DkimKey | None:
        if "._domainkey." not in name:
            return None
        selector, _, domain = name.partition("._domainkey.")
        return self.dkim_keys.get((domain, selector))

    @staticmethod
    def _with_ptrs(zone: str, records: list, plan: MailPlan, addresses, zones: list[str]) -> pulumi.Output:
        """Reverse zones get the PTRs of the node addresses that fall inside them (known only later)."""
        pairs = [pulumi.Output.all(addresses[ip], host) for ip, host in plan.ptr.items() if ip in addresses]

        planned = {r["name"] for r in records if r["type"] == "PTR"}  # additional IPs' PTRs are in the plan

        def build(resolved: list) -> list:
            ptrs: dict[str, set[str]] = {}
            for ip, host in resolved:
                name = reverse_name(ip)
                if name not in planned and in_zone(name, zone) and zone_for(name, zones) == zone:
                    ptrs.setdefault(name, set()).add(host.rstrip(".") + ".")
            extra = [{"name": n, "type": "PTR", "values": sorted(v)} for n, v in sorted(ptrs.items())]
            return list(records) + extra

        return pulumi.Output.all(*pairs).apply(build)

    def _expectations(self, plan: MailPlan, addresses) -> pulumi.Output:
        """What ``modules.dns.verify`` should find, with real addresses and keys (a plain-data output)."""
        items = []
        for exp in plan.expectations:
            ips = [addresses.get(ip, ip) for ip in exp.sending_ips]
            keys = {
                selector: self.dkim_keys[(exp.domain, selector)].public_key for selector, _ in exp.dkim_keys
            }
            items.append(
                pulumi.Output.all(ips=ips, keys=keys).apply(
                    lambda resolved, exp=exp: {
                        "domain": exp.domain,
                        "mail_host": exp.mail_host,
                        "sending_ips": list(resolved["ips"]),
                        "dkim_keys": [[s, resolved["keys"][s]] for s, _ in exp.dkim_keys],
                        "dmarc_policy": exp.dmarc_policy,
                        "ptr_host": exp.ptr_host,
                        "mta_sts_policy": exp.mta_sts_policy,
                    }
                )
            )
        return pulumi.Output.all(*items)
