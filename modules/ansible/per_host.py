"""One :class:`AnsiblePlaybook` per host: a dead or failing host fails only its own resource.

A fleet-wide resource fails the whole ``pulumi up`` when one node is down, and its refresh cannot say
which host drifted. Here each node (names known from config, so resource names are stable before the
fleet exists) gets its own resource with hosts = that node's inventory entry and its own host_vars. Each
writes its fragment of the combined on-call inventory (``ansible/inventory/generated-<stack>.yml``, all
hosts; see :func:`modules.ansible.runner.write_inventory_fragment`) and checks its host on refresh.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi

from modules.ansible.resources import AnsiblePlaybook


def resource_name(component: str, node: str) -> str:
    """``<component>-host-<node>``: stable across ups, one per fleet node."""
    return f"{component}-host-{node}"


def node_entry(inventory: Sequence[Mapping[str, Any]], node: str) -> list[dict[str, Any]]:
    """The node's inventory entry as a one-host list (empty when the fleet has no such node)."""
    return [dict(entry) for entry in inventory if entry.get("name") == node]


def node_host_vars(host_vars: Mapping[str, Mapping[str, Any]], node: str) -> dict[str, dict[str, Any]]:
    """Only the node's own host_vars (the inventory check refuses vars of hosts not in ``hosts``)."""
    return {node: dict(host_vars[node])} if node in host_vars else {}


def host_playbooks(
    component: str,
    nodes: Sequence[str],
    inventory: pulumi.Input[list[dict[str, Any]]],
    *,
    host_vars: pulumi.Input[dict[str, dict[str, Any]]] | None = None,
    opts: pulumi.ResourceOptions | None = None,
    **playbook_args: Any,
) -> dict[str, AnsiblePlaybook]:
    """Node name → its AnsiblePlaybook (``playbook_args``: playbook, vars, secret_vars, group_vars, ...)."""
    fleet = pulumi.Output.from_input(inventory)
    all_vars = pulumi.Output.from_input(host_vars or {})
    found: dict[str, AnsiblePlaybook] = {}
    for node in nodes:
        found[node] = AnsiblePlaybook(
            resource_name(component, node),
            hosts=fleet.apply(lambda entries, node=node: node_entry(entries, node)),
            host_vars=all_vars.apply(lambda values, node=node: node_host_vars(values, node)),
            inventory_host=node,
            refresh_check=True,
            opts=opts,
            **playbook_args,
        )
    return found


def merged_results(playbooks: Mapping[str, AnsiblePlaybook]) -> pulumi.Output[dict[str, dict[str, int]]]:
    """Per host, the counters of its last run (as the fleet-wide resource reported them)."""
    return pulumi.Output.all(*(p.host_results for p in playbooks.values())).apply(
        lambda results: {host: counts for part in results for host, counts in (part or {}).items()}
    )
