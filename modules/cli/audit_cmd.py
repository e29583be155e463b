"""`penguinmails audit`: what an auditor reads from a stack, from its state and history alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from modules.audit import markdown, report
from modules.cli.console import console
from modules.cli.pulumi_json import pulumi_json
from modules.errors import ToolkitError
from modules.policy import rules as policy_rules

REPO_ROOT = Path(__file__).resolve().parents[2]
FINDINGS = 4  # exit code: the report found plaintext secrets, RLS gaps, ledger problems or drift


def _load(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ToolkitError(f"{what}: cannot read {path}: {exc}") from None


def _prices(stack: str, cwd: Path) -> dict[int, float]:
    """Monthly price per plan id from the provider's price list (only with --live)."""
    from modules.cli.fleet_cmd import stack_settings
    from modules.hostwinds.common import settings_from

    rows = settings_from(stack_settings(stack, cwd)).client().price_list()
    prices = {}
    for row in rows:
        try:
            prices[int(row.get("rid") or row.get("id"))] = float(row.get("monthly"))
        except (TypeError, ValueError):
            continue
    return prices


def findings(data: dict[str, Any]) -> list[str]:
    """One line per thing an auditor must act on."""
    lines = [f"plaintext secret: {f['urn']} {f['path']}" for f in data["secrets"]["findings"]]
    for tier, info in data["tiers"].items():
        lines += [f"{tier}: RLS gap: {gap}" for gap in info["rls"].get("gaps") or []]
        lines += [f"{tier}: ledger: {problem}" for problem in info["ledger_problems"]]
    lines += [f"drift: {d['urn']}" for d in data["drift"]]
    lines += [
        f"policy {v.get('policy')}: {v.get('urn', '')} {v.get('message', '')}".rstrip()
        for v in (data.get("policy") or {}).get("violations") or []
    ]
    return lines


def audit(
    stack: str = typer.Option("dev", "--stack", "-s", help="Stack to audit."),
    output_format: str = typer.Option(
        "markdown", "--format", "-f", help="markdown (people) or json (tools)."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the report here, not to stdout."),
    export: Path | None = typer.Option(None, "--export", help="A recorded `pulumi stack export` to read."),
    history: Path | None = typer.Option(None, "--history", help="A recorded `pulumi stack history --json`."),
    live: bool = typer.Option(False, "--live", help="Also ask the providers (the fleet's prices)."),
    cwd: Path = typer.Option(Path("."), "--cwd", help="Folder holding Pulumi.yaml."),
) -> None:
    """The audit report of a stack from its state and history only (no provider call unless --live).

    Exit code 0 when clean, 4 when it found plaintext secrets, RLS gaps, ledger problems, drift or a
    mandatory policy violation (advisories are reported, not counted).
    """
    if output_format not in ("markdown", "json"):
        raise ToolkitError(f"--format: {output_format!r} is not markdown or json")
    if export is not None:
        deployment = _load(export, "--export")
        entries = _load(history, "--history") if history is not None else []
    else:
        deployment = pulumi_json(["stack", "export", "--stack", stack], f"the state of {stack!r}", cwd, {})
        entries = pulumi_json(
            ["stack", "history", "--stack", stack, "--json"], f"the history of {stack!r}", cwd, []
        )
    if not isinstance(deployment, dict) or "resources" not in (deployment.get("deployment") or deployment):
        raise ToolkitError("the export holds no deployment: is it the output of `pulumi stack export`?")
    data = report.build(
        deployment,
        entries,
        stack=stack,
        repo=REPO_ROOT,
        prices=_prices(stack, cwd) if live else None,
        policy=policy_rules.audit_section(deployment),  # the policy pack's rules over the state
    )
    text = (
        json.dumps(data, indent=2, sort_keys=False) + "\n"
        if output_format == "json"
        else markdown.render(data)
    )
    if output is not None:
        output.write_text(text)
        console.print(f"audit of {stack!r} written to {output}")
    else:
        typer.echo(text, nl=False)
    if findings(data):
        raise typer.Exit(FINDINGS)
