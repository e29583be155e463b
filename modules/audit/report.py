"""The audit report of a stack, built from ``pulumi stack export`` and ``pulumi stack history`` only.

Nothing here calls a provider: an auditor with read access to the state gets the same report as the
operator, and a recorded export gives the same report tomorrow. Sections (the JSON keys; SCHEMA_VERSION
bumps when one changes shape):

* ``inventory``: resources by component (the child of the Platform they sit under) and by tier.
* ``secrets``: plaintext values in the state that look like secrets (:mod:`modules.audit.secrets_scan`).
* ``tiers``: per PostgreSQL tier the migration ledger (checked against ``schemas/<tier>``) and the RLS
  coverage its SchemaMigrations resource recorded at its last apply or refresh.
* ``domains``: per sending domain its DKIM selector and key age, its records and any recorded drift.
* ``fleet``: per node plan, location, service id, status, when it was ordered and its age.
* ``history``: each update, preview-less refresh or destroy: when, who (git author), which commit, result,
  resource changes. ``last_refresh`` and ``drift``: the latest refresh and every resource whose state
  records drift.
* ``policy``: results of the policy pack, when the stack has one recorded.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modules.audit.secrets_scan import is_secret, scan_deployment
from modules.errors import ToolkitError
from modules.postgres import migrations as mig

SCHEMA_VERSION = 1
TYPE_PREFIX = "pulumi-python:dynamic/"
OUTER_TYPES = ("pulumi:pulumi:Stack", "penguinmails:platform:Platform")
_FRACTION = re.compile(r"\.\d+")


def _type_name(resource_type: str) -> str:
    return resource_type.removeprefix(TYPE_PREFIX).removeprefix("penguinmails:")


def _parse_time(value: str | None) -> datetime | None:
    """An engine timestamp (nanoseconds, ``Z``) or an ISO time; None when there is none."""
    if not value:
        return None
    text = _FRACTION.sub(lambda m: m.group(0)[:7], str(value).replace("Z", "+00:00"))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _age_days(value: str | None, now: datetime) -> float | None:
    when = _parse_time(value)
    return None if when is None else round((now - when).total_seconds() / 86400, 2)


def _component_of(resource: dict[str, Any], by_urn: dict[str, dict[str, Any]]) -> str:
    """``type name`` of the outermost component under the Platform (or the stack) that holds ``resource``."""
    current = resource
    while True:
        parent = by_urn.get(current.get("parent") or "")
        if parent is None or parent["type"] in OUTER_TYPES:
            break
        current = parent
    if current is resource and resource.get("custom"):
        return _type_name(resource["type"])  # a resource of the platform's own, not in a component
    return f"{_type_name(current['type'])} {current['urn'].rsplit('::', 1)[-1]}"


def inventory(resources: list[dict[str, Any]]) -> dict[str, Any]:
    by_urn = {r["urn"]: r for r in resources}
    by_component: dict[str, Counter] = defaultdict(Counter)
    by_tier: dict[str, Counter] = defaultdict(Counter)
    for resource in resources:
        if not resource.get("custom") or resource["type"].startswith("pulumi:providers:"):
            continue
        kind = _type_name(resource["type"])
        by_component[_component_of(resource, by_urn)][kind] += 1
        tier = (resource.get("outputs") or {}).get("tier")
        if isinstance(tier, str):
            by_tier[tier][kind] += 1
    return {
        "resources": sum(sum(c.values()) for c in by_component.values()),
        "by_component": {name: dict(sorted(c.items())) for name, c in sorted(by_component.items())},
        "by_tier": {name: dict(sorted(c.items())) for name, c in sorted(by_tier.items())},
    }


def _ledger_check(directory: str | None, ledger: dict[str, str], repo: Path) -> list[str]:
    """Where the recorded ledger and the migration files of this checkout disagree."""
    if not directory:
        return ["no migration directory recorded"]
    try:
        files = {f.name: f.sha256 for f in mig.load_dir(repo / directory)}
    except ToolkitError as exc:
        return [f"{directory}: {exc.message}"]
    problems = [
        f"{name}: applied, but not in {directory}"
        if name not in files
        else f"{name}: the file differs from what was applied"
        for name, sha in sorted(ledger.items())
        if files.get(name) != sha
    ]
    return problems + [f"{name}: in {directory}, not applied" for name in sorted(set(files) - set(ledger))]


def tiers(resources: list[dict[str, Any]], repo: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for resource in resources:
        if not resource["type"].endswith("postgres:SchemaMigrations"):
            continue
        outs = resource.get("outputs") or {}
        tier = outs.get("tier", "?")
        ledger = outs.get("migrations") or {}
        coverage = outs.get("rls_coverage")
        rls: dict[str, Any] = {"recorded": coverage is not None}
        if coverage is not None:
            gaps = [
                f"{table}: "
                + ", ".join(
                    what
                    for what, ok in (
                        ("RLS not enabled", info.get("enabled")),
                        ("RLS not forced", info.get("forced")),
                        ("no tenant fence policy", info.get("fenced")),
                    )
                    if not ok
                )
                for table, info in sorted(coverage.items())
                if not (info.get("enabled") and info.get("forced") and info.get("fenced"))
            ]
            rls.update(
                {
                    "tenant_tables": len(coverage),
                    "covered": len(coverage) - len(gaps),
                    "gaps": gaps,
                    "tables": coverage,
                }
            )
        found[tier] = {
            "database": outs.get("database"),
            "migrations": ledger,
            "ledger_problems": _ledger_check(outs.get("directory"), ledger, repo),
            "drift": outs.get("drift") or [],
            "rls": rls,
            "last_applied": resource.get("modified"),
        }
    return dict(sorted(found.items()))


def domains(resources: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    found: dict[str, dict[str, Any]] = defaultdict(lambda: {"dkim": [], "records": [], "drift": []})
    for resource in resources:
        outs = resource.get("outputs") or {}
        kind = _type_name(resource["type"])
        if kind == "dns:DkimKey" and outs.get("domain"):
            found[outs["domain"]]["dkim"].append(
                {
                    "selector": outs.get("selector"),
                    "bits": outs.get("bits"),
                    "created_at": outs.get("created_at"),
                    "age_days": _age_days(outs.get("created_at"), now),
                }
            )
        elif kind == "dns:RecordSet":
            for record in outs.get("records") or []:
                name = str(record.get("name", ""))
                entry = found[_domain_of(name, _dkim_domains(resources))]
                entry["records"].append(f"{name} {record.get('type')}")
                entry["drift"] += [line for line in outs.get("drift") or [] if name in line]
                entry["written"] = max(filter(None, [entry.get("written"), resource.get("modified")]))
    for entry in found.values():
        entry["records"] = sorted(set(entry["records"]))
        entry["drift"] = sorted(set(entry["drift"]))
    return {name: found[name] for name in sorted(found)}


def _dkim_domains(resources: list[dict[str, Any]]) -> set[str]:
    return {
        (r.get("outputs") or {}).get("domain")
        for r in resources
        if _type_name(r["type"]) == "dns:DkimKey" and (r.get("outputs") or {}).get("domain")
    }


def _domain_of(name: str, domains_: set[str]) -> str:
    name = name.rstrip(".")
    matches = [d for d in domains_ if name == d or name.endswith("." + d)]
    return max(matches, key=len) if matches else "(platform)"


def fleet(resources: list[dict[str, Any]], now: datetime, prices: dict[int, float] | None) -> dict[str, Any]:
    nodes = []
    for resource in resources:
        if _type_name(resource["type"]) != "hostwinds:Vps":
            continue
        outs = resource.get("outputs") or {}
        plan = outs.get("plan_id")
        nodes.append(
            {
                "label": outs.get("label"),
                "name": outs.get("name_base"),
                "service_id": outs.get("service_id"),
                "plan_id": plan,
                "plan": outs.get("plan_name"),
                "location_id": outs.get("location_id"),
                "billing_cycle": outs.get("billing_cycle"),
                "rdns": outs.get("rdns"),
                "ordered_at": outs.get("ordered_at"),
                "age_days": _age_days(outs.get("ordered_at"), now),
                "monthly_cost": None
                if prices is None
                else prices.get(int(plan))
                if plan is not None
                else None,
            }
        )
    nodes.sort(key=lambda n: str(n["label"]))
    costs = [n["monthly_cost"] for n in nodes if n["monthly_cost"] is not None]
    return {
        "nodes": nodes,
        "monthly_cost": round(sum(costs), 2) if prices is not None and len(costs) == len(nodes) else None,
        "cost_source": "the provider's price list (--live)" if prices is not None else None,
    }


def history(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The update history, newest first. The file backend records ``version`` 0 for every entry; then the
    entries are numbered by their order (the oldest is 1), as the service backend numbers them."""
    numbered = any(entry.get("version") for entry in entries)
    rows = []
    for index, entry in enumerate(entries):
        env = entry.get("environment") or {}
        rows.append(
            {
                "version": entry.get("version") if numbered else len(entries) - index,
                "kind": entry.get("kind"),
                "result": entry.get("result"),
                "start": entry.get("startTime"),
                "end": entry.get("endTime"),
                "author": env.get("git.author") or env.get("exec.kind"),
                "commit": env.get("git.head"),
                "dirty": env.get("git.dirty") == "true",
                "message": entry.get("message"),
                "changes": entry.get("resourceChanges") or {},
            }
        )
    return rows


def drift(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"urn": r["urn"], "drift": (r.get("outputs") or {}).get("drift")}
        for r in resources
        if isinstance((r.get("outputs") or {}).get("drift"), list) and (r.get("outputs") or {}).get("drift")
    ]


def build(
    deployment: dict[str, Any],
    history_entries: list[dict[str, Any]],
    *,
    stack: str,
    repo: Path,
    now: datetime | None = None,
    prices: dict[int, float] | None = None,
    policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole report as plain JSON-able data."""
    now = now or datetime.now(UTC)
    resources = (deployment.get("deployment") or deployment).get("resources") or []
    rows = history(history_entries)
    refreshes = [row for row in rows if row["kind"] == "refresh"]
    secrets = scan_deployment(deployment.get("deployment") or deployment)
    return {
        "schema_version": SCHEMA_VERSION,
        "stack": stack,
        "generated_at": now.isoformat(timespec="seconds"),
        "state_time": ((deployment.get("deployment") or deployment).get("manifest") or {}).get("time"),
        "inventory": inventory(resources),
        "secrets": {
            "findings": [f.as_dict() for f in secrets],
            "encrypted_values": _count_secrets(resources),
        },
        "tiers": tiers(resources, repo),
        "domains": domains(resources, now),
        "fleet": fleet(resources, now, prices),
        "history": rows,
        "last_refresh": refreshes[0] if refreshes else None,
        "drift": drift(resources),
        "policy": policy or {"recorded": False, "violations": []},
    }


def _count_secrets(value: Any) -> int:
    if is_secret(value):
        return 1
    if isinstance(value, dict):
        return sum(_count_secrets(v) for v in value.values())
    if isinstance(value, list):
        return sum(_count_secrets(v) for v in value)
    return 0
