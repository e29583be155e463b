"""The preview summary's mail-host section: per host, whether its playbook would run and what would change.

Each mail host has its own ``AnsiblePlaybook`` (``inventory_host`` names it). A refresh runs the playbook
in check mode and stores what would change in the resource's ``drift`` output (short lines, never file
contents); ``penguinmails preview --refresh`` runs that refresh inside the preview, whose JSON steps then
carry the refreshed state as ``oldState``. Without ``--refresh`` the drift of the last ``pulumi refresh``
is read from the current state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PLAYBOOK_TYPE = "pulumi-python:dynamic/ansible:Playbook"
UNREACHABLE = "unreachable:"


def _host(state: Mapping[str, Any] | None) -> str | None:
    for part in ("outputs", "inputs"):
        value = ((state or {}).get(part) or {}).get("inventory_host")
        if isinstance(value, str) and value:
            return value
    return None


def _drift(state: Mapping[str, Any] | None) -> list[str]:
    value = ((state or {}).get("outputs") or {}).get("drift")
    return [str(line) for line in value] if isinstance(value, list) else []


def host_rows(preview: Mapping[str, Any], current: Iterable[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """One row per mail host: ``host``, ``op`` (the step planned for its playbook), ``status``, ``drift``."""
    stored = {r.get("urn"): r for r in current if r.get("type") == PLAYBOOK_TYPE and _host(r)}
    rows: dict[str, dict[str, Any]] = {}
    for step in preview.get("steps") or []:
        old, new = step.get("oldState"), step.get("newState")
        if (new or old or {}).get("type") != PLAYBOOK_TYPE:
            continue
        host = _host(new) or _host(old)
        if host is None:
            continue
        urn, op = step.get("urn", ""), step.get("op", "")
        if op in ("refresh", "read"):
            # The engine (v3.68) lists a refresh step per resource whose states are the stored ones; the
            # refreshed state is the old state of the step that follows (same, update).
            continue
        # The step's old state is the refreshed one (preview --refresh); else what the last refresh stored.
        drift = _drift(old) if old and "drift" in (old.get("outputs") or {}) else _drift(stored.get(urn))
        rows[host] = {"host": host, "op": op, "urn": urn, "drift": drift}
    for urn, resource in stored.items():  # hosts the preview did not list (a recorded preview)
        host = _host(resource)
        if host and host not in rows:
            rows[host] = {"host": host, "op": "same", "urn": urn, "drift": _drift(resource)}
    for row in rows.values():
        row["status"] = status(row["op"], row["drift"])
    return [rows[name] for name in sorted(rows)]


def status(op: str, drift: list[str]) -> str:
    if any(line.startswith(UNREACHABLE) for line in drift):
        return "unreachable"
    if drift:
        return "drift"
    return {"same": "converged", "create": "new host", "delete": "removed"}.get(op, "will re-run")


def markdown_lines(rows: list[dict[str, Any]]) -> list[str]:
    """``Mail hosts`` section: a table of hosts, then each drifted host's would-change tasks."""
    if not rows:
        return []
    out = ["", "Mail hosts:", "", "| host | playbook | status | would change |", "|---|---|---|---|"]
    out += [f"| {r['host']} | {r['op']} | {r['status']} | {len(r['drift'])} |" for r in rows]
    for row in rows:
        if row["drift"]:
            out += ["", f"`{row['host']}` (check mode, `--check --diff`):", ""]
            out += [f"- {line}" for line in row["drift"]]
    return out
