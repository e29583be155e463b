"""``VpsFleet``: N identical Hostwinds nodes from the ``fleet`` config, ready as an Ansible inventory.

A ``FleetIdentity`` gives the fleet its random tag first; every node label and key name ends in it, so
nothing another stack or person made is ever taken for ours. Each node is a ``Vps`` that returns as soon
as its order shows; one ``FleetReady`` then waits for all of them together and sets each node's rDNS
(``<node>.<rdns_domain>``) and firewall profile, so a fleet of any size takes about one build time.
``inventory`` lists ``{name, fqdn, ip, service_id}`` per node. A node with ``fleet.additional_ips`` gets an
``AdditionalIps`` after the readiness step, which proves the addresses are the server's and sets their
rDNS; only then does its inventory entry carry ``additional_ips: [{name, address, fqdn}]``.
"""

from __future__ import annotations

import hashlib

import pulumi

from modules.config.model import FleetConfig
from modules.hostwinds.additional_ips import AdditionalIp, AdditionalIps
from modules.hostwinds.common import vps_label
from modules.hostwinds.fleet_ready import FleetReady
from modules.hostwinds.identity import FleetIdentity
from modules.hostwinds.ssh_key import SshKey
from modules.hostwinds.vps import Vps


def key_fingerprint(public_key: str) -> str:
    """A short stable name part for a public key (type and data only; the comment may change)."""
    return hashlib.sha256(" ".join(public_key.split()[:2]).encode()).hexdigest()[:12]


class VpsFleet(pulumi.ComponentResource):
    """The sending fleet: SSH keys, one ``Vps`` per node, and the fleet-wide readiness step."""

    inventory: pulumi.Output[list[dict]]

    def __init__(self, name: str, fleet: FleetConfig, opts: pulumi.ResourceOptions | None = None):
        super().__init__("penguinmails:hostwinds:VpsFleet", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        stack = pulumi.get_stack()
        self.identity = FleetIdentity(f"{name}-identity", opts=child)
        tag = self.identity.tag

        # Keys given as text are registered on the account; keys named in ssh_key_names are already there.
        key_names: list[pulumi.Input[str]] = list(fleet.ssh_key_names)
        self.ssh_keys: list[SshKey] = []
        for public_key in dict.fromkeys(key.strip() for key in fleet.ssh_public_keys):
            digest = key_fingerprint(public_key)
            key = SshKey(
                f"{name}-key-{digest}",
                key_name=pulumi.Output.concat(vps_label(stack, f"{name}-{digest}", 52), "-", tag),
                public_key=public_key,
                opts=child,
            )
            self.ssh_keys.append(key)
            key_names.append(key.key_name)
        if not key_names:
            pulumi.log.warn(
                f"{name}: no SSH key is configured (fleet.ssh_key_names / ssh_public_keys); nobody can log in"
            )

        self.nodes: dict[str, Vps] = {}
        node_inputs: list[dict[str, pulumi.Input]] = []
        for node in fleet.node_names():
            fqdn = fleet.node_fqdn(node)
            vps = Vps(
                f"{name}-{node}",
                location_id=fleet.location_id,
                image=fleet.image,
                plan_id=fleet.plan_id,
                ssh_keys=key_names,
                firewall_profile=fleet.firewall_profile,
                rdns=fqdn,
                billing_cycle=fleet.billing_cycle,
                owner_tag=tag,
                order_budget=max(fleet.nodes, 1),
                wait_until_ready=False,
                opts=child,
            )
            self.nodes[node] = vps
            node_inputs.append(
                {
                    "name": node,
                    "label": vps.label,
                    "service_id": vps.service_id,
                    "server_uuid": vps.server_uuid,
                    "fqdn": fqdn,
                    "rdns": fqdn,
                    "firewall_profile": fleet.firewall_profile,
                }
            )

        self.ready = FleetReady(
            f"{name}-ready",
            node_inputs,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(self.nodes.values())),
        )
        self.inventory = self.ready.inventory
        self.additional_ips: dict[str, AdditionalIps] = {}
        self.declared_ips: dict[str, list[AdditionalIp]] = {}
        for index, node in enumerate(fleet.node_names(), start=1):
            if index in fleet.additional_ips:
                self.declared_ips[node] = [AdditionalIp(*ip) for ip in fleet.extra_ips(index)]
                self.additional_ips[node] = AdditionalIps(
                    f"{name}-{node}-ips",
                    node=node,
                    service_id=self.nodes[node].service_id,
                    label=self.nodes[node].label,
                    server_uuid=self.nodes[node].server_uuid,
                    ips=self.declared_ips[node],
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[self.ready]),
                )
        if self.additional_ips:  # a fleet without any keeps the readiness step's inventory as it was
            # The declared names, once each node's proof has passed (not the live PTRs a refresh read).
            proofs = [r.ips for r in self.additional_ips.values()]
            self.inventory = pulumi.Output.all(self.ready.inventory, *proofs).apply(
                lambda values, declared=dict(self.declared_ips): with_additional_ips(values[0], declared)
            )
        self.register_outputs({"inventory": self.inventory})

    def proven_ips(self) -> dict[str, pulumi.Output[str]]:
        """Each declared additional address → itself, resolving only once its node's proof passed."""
        return {
            ip.address: self.additional_ips[node].ips.apply(lambda _, address=ip.address: address)
            for node, declared in self.declared_ips.items()
            for ip in declared
        }


def with_additional_ips(inventory: list[dict], declared: dict[str, list[AdditionalIp]]) -> list[dict]:
    """The inventory with each node's proven additional IPs (``{name, address, fqdn}``, ip2 first)."""
    return [
        {
            **node,
            "additional_ips": [
                {"name": i.name, "address": i.address, "fqdn": i.rdns} for i in declared[node["name"]]
            ],
        }
        if node["name"] in declared
        else node
        for node in inventory
    ]


def sending_addresses(node: dict) -> list[str]:
    """Every address an inventory node sends from: its main IP, then its proven additional ones."""
    return [node["ip"], *(ip["address"] for ip in node.get("additional_ips") or [])]
