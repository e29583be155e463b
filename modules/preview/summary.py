"""A pull request's view of a preview: what changes, by component and tier, replaces and deletes first.

Input is the engine's ``pulumi preview --json`` (steps with old and new state; secrets already shown as
``[secret]``) plus, for the cost, the fleet's VPS in the current state and the provider's price list. The
dynamic providers leave ``detailedDiff`` empty, so the changed keys are found by comparing the steps' old and
new inputs (secrets compare as ``[secret]``: a changed password shows as a replace or update reason only).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from modules.preview import hosts as mail_hosts
from modules.preview.policy import markdown_lines as policy_lines

# Exit codes a pipeline can branch on.
NO_CHANGES, ERROR, CHANGES, POLICY_VIOLATION = 0, 1, 2, 3
DESTRUCTIVE = ("replace", "create-replacement", "delete-replaced", "delete")
IGNORED_OPS = ("same", "read", "refresh", "discard")
TYPE_PREFIX = "pulumi-python:dynamic/"
VPS_TYPE = "pulumi-python:dynamic/hostwinds:Vps"
OUTER = ("pulumi:pulumi:Stack", "penguinmails:platform:Platform")


def short_type(resource_type: str) -> str:
    return resource_type.removeprefix(TYPE_PREFIX).removeprefix("penguinmails:")


def component_of(urn: str) -> str:
    """The outermost component under the Platform, read from the URN's type chain."""
    chain = urn.split("::")[2].split("$") if urn.count("::") >= 3 else []
    inner = [t for t in chain if t not in OUTER]
    return short_type(inner[0]) if inner else "stack"


def _name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def changed_keys(step: dict[str, Any]) -> list[str]:
    old = (step.get("oldState") or {}).get("inputs") or {}
    new = (step.get("newState") or {}).get("inputs") or {}
    keys = [k for k in sorted(set(old) | set(new)) if not k.startswith("__") and old.get(k) != new.get(k)]
    return keys or list(step.get("replaceReasons") or step.get("diffReasons") or [])


@dataclass(frozen=True)
class Change:
    op: str
    urn: str
    type: str
    component: str
    tier: str | None
    keys: list[str]
    replace_reasons: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "name": _name(self.urn),
            "urn": self.urn,
            "type": self.type,
            "component": self.component,
            "tier": self.tier,
            "changed": self.keys,
            "replace_reasons": self.replace_reasons,
        }


def changes(preview: dict[str, Any]) -> list[Change]:
    found = []
    for step in preview.get("steps") or []:
        op = step.get("op", "")
        if op in IGNORED_OPS:
            continue
        state = step.get("newState") or step.get("oldState") or {}
        inputs = state.get("inputs") or {}
        tier = inputs.get("tier") if isinstance(inputs.get("tier"), str) else None
        found.append(
            Change(
                op=op,
                urn=step.get("urn", ""),
                type=short_type(state.get("type", "")),
                component=component_of(step.get("urn", "")),
                tier=tier,
                keys=changed_keys(step),
                replace_reasons=list(step.get("replaceReasons") or []),
            )
        )
    # Replaces and deletes first: they are what a reviewer must not miss.
    return sorted(found, key=lambda c: (c.op not in DESTRUCTIVE, c.component, c.urn))


def _plan_of(state: dict[str, Any] | None) -> int | None:
    for part in ("inputs", "outputs"):
        value = ((state or {}).get(part) or {}).get("plan_id")
        if isinstance(value, int | float | str) and str(value).strip().isdigit():
            return int(value)
    return None


def fleet_cost(
    preview: dict[str, Any], current: list[dict[str, Any]], prices: dict[int, float] | None
) -> dict[str, Any]:
    """Monthly cost of the VPS in the state now, and after the preview's creates, deletes and replaces."""
    before: Counter[int] = Counter()
    for resource in current:
        if resource.get("type") == VPS_TYPE and (plan := _plan_of(resource)) is not None:
            before[plan] += 1
    after = Counter(before)
    for step in preview.get("steps") or []:
        state = step.get("newState") or step.get("oldState") or {}
        if state.get("type") != VPS_TYPE:
            continue
        op = step.get("op")
        old_plan, new_plan = _plan_of(step.get("oldState")), _plan_of(step.get("newState"))
        if op == "create" and new_plan is not None:
            after[new_plan] += 1
        elif op == "delete" and old_plan is not None:
            after[old_plan] -= 1
        elif op in ("replace", "update") and old_plan != new_plan and None not in (old_plan, new_plan):
            after[old_plan] -= 1
            after[new_plan] += 1
    result: dict[str, Any] = {
        "nodes_before": sum(before.values()),
        "nodes_after": sum(after.values()),
        "plans_before": {str(k): v for k, v in sorted(before.items()) if v},
        "plans_after": {str(k): v for k, v in sorted(after.items()) if v},
        "monthly_before": None,
        "monthly_after": None,
        "monthly_delta": None,
        "unpriced_plans": [],
    }
    if prices is not None:
        unpriced = sorted({p for p in (set(before) | set(after)) if p not in prices})
        result["unpriced_plans"] = unpriced
        if not unpriced:
            cost_before = round(sum(prices[p] * n for p, n in before.items()), 2)
            cost_after = round(sum(prices[p] * n for p, n in after.items()), 2)
            result.update(
                monthly_before=cost_before,
                monthly_after=cost_after,
                monthly_delta=round(cost_after - cost_before, 2),
            )
    return result


def summarize(
    preview: dict[str, Any],
    *,
    stack: str,
    current: list[dict[str, Any]] | None = None,
    prices: dict[int, float] | None = None,
    policy: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    found = changes(preview)
    by_component: dict[str, Counter] = defaultdict(Counter)
    by_tier: dict[str, Counter] = defaultdict(Counter)
    for change in found:
        by_component[change.component][change.op] += 1
        if change.tier:
            by_tier[change.tier][change.op] += 1
    violations = [v for v in policy or [] if v.get("level") == "mandatory"]
    code = POLICY_VIOLATION if violations else CHANGES if found else NO_CHANGES
    return {
        "stack": stack,
        "exit_code": code,
        "change_summary": preview.get("changeSummary") or {},
        "destructive": [c.as_dict() for c in found if c.op in DESTRUCTIVE],
        "changes": [c.as_dict() for c in found],
        "by_component": {k: dict(v) for k, v in sorted(by_component.items())},
        "by_tier": {k: dict(v) for k, v in sorted(by_tier.items())},
        "fleet_cost": fleet_cost(preview, current or [], prices),
        "policy": policy or [],
        "hosts": mail_hosts.host_rows(preview, current or []),
        "diagnostics": [
            d.get("message", "").strip()
            for d in preview.get("diagnostics") or []
            if d.get("severity") in ("error", "warning")
        ],
    }


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.2f}"


def markdown(summary: dict[str, Any]) -> str:
    counts = ", ".join(f"{op} {n}" for op, n in sorted(summary["change_summary"].items()) if op != "same")
    out = [f"### Preview of `{summary['stack']}`: {counts or 'no changes'}", ""]
    if summary["destructive"]:
        out += [f"**{len(summary['destructive'])} replace/delete:**", ""]
        out += [
            f"- **{c['op']}** `{c['type']}` {c['name']} ({c['component']}"
            + (f", {c['tier']}" if c["tier"] else "")
            + ")"
            + (
                f": {', '.join(c['replace_reasons'] or c['changed'])}"
                if c["replace_reasons"] or c["changed"]
                else ""
            )
            for c in summary["destructive"]
        ]
        out.append("")
    others = [c for c in summary["changes"] if c["op"] not in DESTRUCTIVE]
    if others:
        out += ["| op | resource | component | tier | changed |", "|---|---|---|---|---|"]
        out += [
            f"| {c['op']} | `{c['type']}` {c['name']} | {c['component']} | {c['tier'] or ''} | "
            f"{', '.join(c['changed'])} |"
            for c in others
        ]
        out.append("")
    if summary["by_component"]:
        out += ["| component | changes |", "|---|---|"]
        out += [
            f"| {name} | {', '.join(f'{op} {n}' for op, n in sorted(ops.items()))} |"
            for name, ops in summary["by_component"].items()
        ]
        out.append("")
    cost = summary["fleet_cost"]
    out.append(
        f"Fleet: {cost['nodes_before']} → {cost['nodes_after']} nodes; monthly cost {_money(cost['monthly_before'])}"
        f" → {_money(cost['monthly_after'])}"
        + (f" ({cost['monthly_delta']:+,.2f})" if cost["monthly_delta"] is not None else "")
        + (
            f"; no price for plan(s) {', '.join(map(str, cost['unpriced_plans']))}"
            if cost["unpriced_plans"]
            else ""
        )
        + "."
    )
    out += mail_hosts.markdown_lines(summary.get("hosts") or [])
    out += policy_lines(summary["policy"])  # modules/preview/policy.py
    if summary["diagnostics"]:
        out += ["", "Diagnostics:", ""] + [f"- {line}" for line in summary["diagnostics"]]
    return "\n".join(out) + "\n"
