"""Servers that carry a stack's fleet tag but are not in its state: what a crashed run may leave behind.

Every label the fleet gives ends in its :class:`~modules.hostwinds.identity.FleetIdentity` tag, a random
part only this stack's state knows. An instance whose label ends in the tag is therefore ours; if no
``Vps`` of the state records its service id or its label (a pending order), nothing manages it and it is
billed for nothing. Listing reads the stack's state and one account listing; terminating re-reads each
instance and acts only when it still carries the same tagged label.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from modules.hostwinds.client import HostwindsClient, HostwindsNotFound, as_int
from modules.hostwinds.common import GONE_STATES, status_of
from modules.hostwinds.identity import is_tag

VPS_TYPE = "pulumi-python:dynamic/hostwinds:Vps"
IDENTITY_TYPE = "pulumi-python:dynamic/hostwinds:FleetIdentity"


@dataclass
class StackFleet:
    """What a stack's state says about its fleet: its tags and the servers it manages."""

    stack: str
    tags: set[str] = field(default_factory=set)
    service_ids: set[int] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)  # of pending orders only (no service id yet)
    in_flight: int = 0  # operations the engine had under way when the state was read

    def owns_label(self, label: str) -> bool:
        return any(label.endswith(f"-{tag}") for tag in self.tags)


def fleet_of(deployment: dict[str, Any], stack: str) -> StackFleet:
    """Read tags, service ids and labels from a ``pulumi stack export`` deployment."""
    fleet = StackFleet(stack)
    for resource in deployment.get("resources") or []:
        outputs = resource.get("outputs") or {}
        if resource.get("type") == IDENTITY_TYPE and is_tag(outputs.get("tag")):
            fleet.tags.add(outputs["tag"])
        elif resource.get("type") == VPS_TYPE:
            sid = as_int(outputs.get("service_id"))
            if sid is None and str(resource.get("id", "")).isdigit():
                sid = int(resource["id"])
            if sid is not None:
                fleet.service_ids.add(sid)
            elif outputs.get("label"):
                fleet.labels.add(str(outputs["label"]))
    fleet.in_flight = len(deployment.get("pending_operations") or [])
    return fleet


def find_orphans(fleet: StackFleet, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Live instances carrying one of the stack's tags that no resource of its state manages."""
    found = []
    for inst in instances:
        label = str(inst.get("srvrname") or "")
        sid = as_int(inst.get("serviceid"))
        if not fleet.owns_label(label) or status_of(inst) in GONE_STATES:
            continue
        if sid in fleet.service_ids or label in fleet.labels:
            continue
        found.append(
            {
                "service_id": sid,
                "label": label,
                "status": status_of(inst),
                "main_ip": str(inst.get("main_ip") or ""),
                "created_at": str(inst.get("created_at") or ""),
                "plan": str(inst.get("product_name") or ""),
            }
        )
    return sorted(found, key=lambda row: row["label"])


def terminate_orphans(
    client: HostwindsClient, fleet: StackFleet, orphans: list[dict[str, Any]], timeout: float = 600.0
) -> list[str]:
    """Terminate each orphan after re-reading it; returns one line per instance saying what happened."""
    lines, waiting = [], []
    for orphan in orphans:
        sid = int(orphan["service_id"])
        try:
            inst = client.instance_get(sid)
        except HostwindsNotFound:
            lines.append(f"{sid} {orphan['label']}: already gone")
            continue
        label = str(inst.get("srvrname") or "")
        if label != orphan["label"] or not fleet.owns_label(label):
            lines.append(f"{sid}: now labelled {label!r}, not {orphan['label']!r}; left alone")
            continue
        try:
            client.instance_terminate(sid)
        except HostwindsNotFound:
            lines.append(f"{sid} {label}: already gone")
            continue
        waiting.append(sid)
        lines.append(f"{sid} {label}: terminated")
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        listed = {as_int(row.get("serviceid")) for row in client.instance_list()}
        waiting = [sid for sid in waiting if sid in listed]
        if waiting:
            time.sleep(1.0)
    lines += [f"{sid}: still listed {timeout:.0f} s after terminate; check the portal" for sid in waiting]
    return lines
