"""Plan the RFC 2136 changes that turn a live zone into the desired records, touching only what we own.

Pure functions over :class:`~modules.dns.rfc2136.LiveZone` and :class:`~modules.dns.records.Record`, so
the ownership, conflict and safety rules are unit-tested without a server:

- a slot we own (recorded in state) is made to match: stray values in it are deleted, missing ones added;
- a slot we do not own yet is claimed only if it is empty or already holds exactly our values (a create
  retried after a lost answer finds its own records); anything else is a conflict, unless takeover is
  opted into;
- slots we owned and no longer want are emptied; everything else in the zone is left alone;
- every touched RRset carries a prerequisite with its live content, so a concurrent change makes the
  server refuse the whole message instead of us overwriting it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modules.dns.records import Record, parse_slot_key
from modules.dns.rfc2136 import Change, LiveZone, Prerequisite

SAFETY_MIN_RECORDS = 10  # as octoDNS: small zones are not guarded (one change is already a large share)


@dataclass
class ZoneChanges:
    zone: str
    changes: list[Change] = field(default_factory=list)
    prerequisites: list[Prerequisite] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    owned: list[str] = field(default_factory=list)
    existing_changed: int = 0  # live records that are replaced or deleted
    added: int = 0

    @property
    def empty(self) -> bool:
        return not self.changes

    def share(self, live: LiveZone) -> float:
        total = live.record_count()
        return self.existing_changed / total if total else 0.0

    def summary(self) -> str:
        return f"{self.added} added, {self.existing_changed} replaced or deleted"


def desired_slots(records: list[Record]) -> dict[str, tuple[int, frozenset[str]]]:
    slots: dict[str, tuple[int, frozenset[str]]] = {}
    for record in records:
        for key, values in record.slots().items():
            slots[key] = (record.ttl, frozenset(values))
    return slots


def plan_changes(
    zone: str, desired: list[Record], owned: set[str], live: LiveZone, adopt_existing: bool = False
) -> ZoneChanges:
    plan = ZoneChanges(zone)
    wanted = desired_slots(desired)
    touched: set[tuple[str, str]] = set()
    wanted_names_types: dict[str, set[str]] = {}
    for key in wanted:
        name, rtype, _ = parse_slot_key(key)
        wanted_names_types.setdefault(name, set()).add(rtype)
    owned_names_types: dict[str, set[str]] = {}
    for key in owned:
        name, rtype, _ = parse_slot_key(key)
        owned_names_types.setdefault(name, set()).add(rtype)

    for key, (ttl, values) in sorted(wanted.items()):
        name, rtype, _ = parse_slot_key(key)
        live_values = set(live.slot_values(key))
        rrset = live.rrsets.get((name, rtype))
        if key not in owned:
            problem = _claim_problem(
                name, rtype, values, live_values, live, owned_names_types, wanted_names_types
            )
            if problem and not adopt_existing:
                plan.conflicts.append(problem)
                continue
        to_delete = live_values - values
        to_add = values - live_values
        if rrset is not None and rrset.ttl != ttl and live_values & values:
            # One TTL per RRset: re-add what stays so the server takes the new TTL.
            to_delete |= live_values & values
            to_add |= live_values & values
        for value in sorted(to_delete):
            plan.changes.append(Change("delete", name, rtype, value))
        for value in sorted(to_add):
            plan.changes.append(Change("add", name, rtype, value, ttl))
        plan.existing_changed += len(to_delete)
        plan.added += len(to_add - to_delete)
        if to_delete or to_add:
            touched.add((name, rtype))
        plan.owned.append(key)

    for key in sorted(owned - set(wanted)):
        name, rtype, _ = parse_slot_key(key)
        live_values = live.slot_values(key)
        for value in sorted(live_values):
            plan.changes.append(Change("delete", name, rtype, value))
        plan.existing_changed += len(live_values)
        if live_values:
            touched.add((name, rtype))

    for name, rtype in sorted(touched):
        rrset = live.rrsets.get((name, rtype))
        plan.prerequisites.append(
            Prerequisite(name, rtype, rrset.values if rrset else (), rrset.ttl if rrset else 0)
        )
    plan.owned.sort()
    return plan


def _claim_problem(name, rtype, values, live_values, live: LiveZone, owned_types, wanted_types) -> str | None:
    """Why we may not take this slot, or None. Only records we do not own count as obstacles."""
    ours = owned_types.get(name, set()) | wanted_types.get(name, set())
    foreign_types = {t for t in live.types_at(name) if t not in ours and t not in ("SOA", "NS")}
    if rtype == "CNAME" and foreign_types:
        return f"{name} CNAME: the name already has {', '.join(sorted(foreign_types))} records we do not own"
    if "CNAME" in live.types_at(name) and rtype != "CNAME" and "CNAME" not in ours:
        return f"{name} {rtype}: the name is a CNAME we do not own"
    if live_values and live_values != set(values):
        shown = "; ".join(v if len(v) <= 60 else v[:57] + "..." for v in sorted(live_values))
        return f"{name} {rtype}: already holds {shown!r}, which this stack did not create"
    return None


def live_records(live: LiveZone, owned: list[str], stored: list[dict]) -> list[dict]:
    """What the server holds in our slots, in the shape of the ``records`` input (for refresh)."""
    not_after = {(r.get("name"), r.get("type")): r.get("not_after") for r in stored if isinstance(r, dict)}
    grouped: dict[tuple[str, str], set[str]] = {}
    for key in owned:
        name, rtype, _ = parse_slot_key(key)
        values = live.slot_values(key)
        if values:
            grouped.setdefault((name, rtype), set()).update(values)
    records = []
    for (name, rtype), values in sorted(grouped.items()):
        entry = {"name": name, "type": rtype, "ttl": live.rrsets[(name, rtype)].ttl, "values": sorted(values)}
        if not_after.get((name, rtype)):
            entry["not_after"] = not_after[(name, rtype)]
        records.append(entry)
    return records
