"""The audit report as markdown for people; the JSON (:func:`modules.audit.report.build`) is for tools."""

from __future__ import annotations

from typing import Any


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def render(report: dict[str, Any]) -> str:
    out = [
        f"# Audit of stack `{report['stack']}`",
        "",
        f"Generated {report['generated_at']} from the state written {report.get('state_time') or '(unknown)'}.",
        "",
        "## Inventory",
        "",
        f"{report['inventory']['resources']} resources.",
        "",
    ]
    out += _table(
        ["component", "resources"],
        [
            [name, ", ".join(f"{kind} x{count}" for kind, count in kinds.items())]
            for name, kinds in report["inventory"]["by_component"].items()
        ],
    )
    out += ["", "By tier:", ""]
    out += _table(
        ["tier", "resources"],
        [
            [tier, ", ".join(f"{kind} x{count}" for kind, count in kinds.items())]
            for tier, kinds in report["inventory"]["by_tier"].items()
        ],
    )
    secrets = report["secrets"]
    out += ["", "## Secrets in the state", ""]
    out.append(f"{secrets['encrypted_values']} values are encrypted Pulumi secrets.")
    if secrets["findings"]:
        out += ["", f"**{len(secrets['findings'])} plaintext value(s) that look like secrets:**", ""]
        out += _table(
            ["resource", "where", "why"], [[f["urn"], f["path"], f["reason"]] for f in secrets["findings"]]
        )
    else:
        out.append("No plaintext value that looks like a secret.")
    out += ["", "## PostgreSQL tiers", ""]
    rows = []
    for tier, info in report["tiers"].items():
        rls = info["rls"]
        coverage = (
            f"{rls['covered']}/{rls['tenant_tables']} tenant tables"
            if rls.get("recorded")
            else "not recorded"
        )
        rows.append(
            [
                tier,
                info["database"],
                len(info["migrations"]),
                "; ".join(info["ledger_problems"]) or "matches the checkout",
                coverage,
                "; ".join(rls.get("gaps") or []) or "-",
                "; ".join(info["drift"]) or "-",
            ]
        )
    out += _table(
        ["tier", "database", "migrations", "ledger", "RLS (enabled+forced+fence)", "gaps", "drift"], rows
    )
    out += ["", "## Sending domains", ""]
    out += _table(
        ["domain", "DKIM (selector, bits, age days)", "records", "records last written", "drift"],
        [
            [
                name,
                "; ".join(f"{k['selector']} {k['bits']} {k['age_days']}" for k in info["dkim"]) or "-",
                len(info["records"]),
                info.get("written") or "-",
                "; ".join(sorted(set(info["drift"]))) or "-",
            ]
            for name, info in report["domains"].items()
        ],
    )
    fleet = report["fleet"]
    out += ["", "## Fleet", ""]
    out += _table(
        ["node", "service id", "plan", "location", "billing", "ordered", "age (days)", "monthly cost"],
        [
            [
                n["name"],
                n["service_id"],
                n["plan"],
                n["location_id"],
                n["billing_cycle"],
                n["ordered_at"],
                n["age_days"],
                n["monthly_cost"] if n["monthly_cost"] is not None else "(--live)",
            ]
            for n in fleet["nodes"]
        ],
    )
    if fleet["monthly_cost"] is not None:
        out += ["", f"Fleet monthly cost: {fleet['monthly_cost']:.2f} (from {fleet['cost_source']})."]
    out += ["", "## Changes (stack history)", ""]
    out += _table(
        ["#", "kind", "result", "start", "author", "commit", "changes"],
        [
            [
                h["version"],
                h["kind"],
                h["result"],
                h["start"],
                h["author"],
                (h["commit"] or "")[:10] + (" (dirty)" if h["dirty"] else ""),
                ", ".join(f"{k} {v}" for k, v in sorted(h["changes"].items())),
            ]
            for h in report["history"]
        ],
    )
    out += ["", "## Refresh and drift", ""]
    last = report["last_refresh"]
    out.append(f"Last refresh: {last['start']} ({last['result']})." if last else "Never refreshed.")
    if report["drift"]:
        out += [
            "",
            *_table(["resource", "drift"], [[d["urn"], "; ".join(d["drift"])] for d in report["drift"]]),
        ]
    else:
        out.append("No resource records drift.")
    out += ["", "## Policy", ""]
    policy = report["policy"]
    if not policy.get("recorded"):
        out.append("No policy results recorded for this stack.")
    elif policy["violations"]:
        out += _table(
            ["policy", "level", "resource", "message"],
            [[v.get("policy"), v.get("level"), v.get("urn"), v.get("message")] for v in policy["violations"]],
        )
    else:
        out.append("No policy violations.")
    if policy.get("advisories"):
        out += ["", "Advisory:", ""]
        out += _table(
            ["policy", "resource", "message"],
            [[v.get("policy"), v.get("urn") or "(stack)", v.get("message")] for v in policy["advisories"]],
        )
    return "\n".join(out) + "\n"
