"""`penguinmails preview`: the engine's JSON preview as a summary a pull request can show."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import typer

from modules.cli.console import console
from modules.cli.pulumi_json import pulumi_json
from modules.errors import ToolkitError
from modules.preview import policy as pol
from modules.preview import summary as sm


def prices_for(stack: str, cwd: Path) -> tuple[dict[int, float] | None, str | None]:
    """The price list when the stack has (or plans) a fleet; (None, why) when it cannot be read."""
    from modules.cli.audit_cmd import _prices

    try:
        return _prices(stack, cwd), None
    except ToolkitError as exc:
        return None, f"fleet cost unknown: {exc.message}"
    except Exception as exc:  # a provider outage must not hide the rest of the summary
        return None, f"fleet cost unknown: the price list could not be read ({type(exc).__name__})"


def run_preview(
    stack: str, cwd: Path, refresh: bool, policy_packs: list[Path], event_log: Path | None = None
) -> tuple[dict, int]:
    args = ["pulumi", "preview", "--json", "--stack", stack, "--non-interactive"]
    if refresh:
        args.append("--refresh")
    for pack in policy_packs:
        args += ["--policy-pack", str(pack)]
    env = None
    if (
        policy_packs and event_log is not None
    ):  # policy results come as events only (modules/preview/policy.py)
        args += ["--event-log", str(event_log)]
        env = pol.engine_env()
    try:
        done = subprocess.run(args, capture_output=True, text=True, cwd=cwd, check=False, env=env)
    except FileNotFoundError:
        raise ToolkitError("the pulumi CLI is not on PATH (run `source tools/env.sh`)") from None
    try:
        preview = json.loads(done.stdout) if done.stdout.strip() else {}
    except ValueError:
        preview = {}
    if done.returncode != 0 and not preview.get("steps"):
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-5:]
        raise ToolkitError(f"preview of {stack!r} failed: " + " | ".join(tail))
    return preview, done.returncode


def preview(
    stack: str = typer.Option("dev", "--stack", "-s", help="Stack to preview."),
    output_format: str = typer.Option("markdown", "--format", "-f", help="markdown (pull requests) or json."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the summary here, not to stdout."),
    json_output: Path | None = typer.Option(
        None, "--json-output", help="Also write the JSON summary here (one engine run for both formats)."
    ),
    refresh: bool = typer.Option(False, "--refresh", help="Refresh first (a drift check)."),
    from_json: Path | None = typer.Option(None, "--from-json", help="Summarize a recorded `preview --json`."),
    policy_pack: list[Path] = typer.Option([], "--policy-pack", help="Run this policy pack (repeatable)."),
    use_policies: bool = typer.Option(
        True,
        "--policies/--no-policies",
        help="Run policies/ (the project's pack) unless --policy-pack is given.",
    ),
    cwd: Path = typer.Option(Path("."), "--cwd", help="Folder holding Pulumi.yaml."),
) -> None:
    """Summarize `pulumi preview --json`: counts by component and tier, replaces and deletes first, the
    fleet's monthly cost before and after, policy results.

    Exit codes: 0 no changes, 2 changes (after --refresh: drift), 3 a mandatory policy violated, 1 error.
    """
    if output_format not in ("markdown", "json"):
        raise ToolkitError(f"--format: {output_format!r} is not markdown or json")
    policy: list[dict] = []
    if from_json is not None:
        try:
            data, engine_code = json.loads(from_json.read_text()), 0
        except (OSError, ValueError) as exc:
            raise ToolkitError(f"--from-json: cannot read {from_json}: {exc}") from None
    else:
        packs = [p.resolve() for p in policy_pack] or (
            [p] if use_policies and (p := pol.default_pack(cwd)) else []
        )
        with tempfile.TemporaryDirectory(prefix="pm-preview-") as scratch:
            events = Path(scratch) / "events.jsonl"
            data, engine_code = run_preview(stack, cwd, refresh, packs, events)
            policy = pol.results(pol.read_events(events))
    current = []
    notes = []
    if from_json is None:
        exported = pulumi_json(["stack", "export", "--stack", stack], f"the state of {stack!r}", cwd, {})
        current = (exported.get("deployment") or {}).get("resources") or []
    has_fleet = any(r.get("type") == sm.VPS_TYPE for r in current) or any(
        sm.VPS_TYPE in (s.get("urn") or "") for s in data.get("steps") or []
    )
    prices = None
    if has_fleet and from_json is None:
        prices, why = prices_for(stack, cwd)
        notes += [why] if why else []
    result = sm.summarize(data, stack=stack, current=current, prices=prices, policy=policy)
    result["diagnostics"] = [d for d in result["diagnostics"] if not pol.is_host_notice(d)] + notes
    if engine_code and result["exit_code"] != sm.POLICY_VIOLATION:
        result["exit_code"] = sm.ERROR
    text = json.dumps(result, indent=2) + "\n" if output_format == "json" else sm.markdown(result)
    if json_output is not None:
        json_output.write_text(json.dumps(result, indent=2) + "\n")
    if output is not None:
        output.write_text(text)
        console.print(f"preview summary of {stack!r} written to {output}")
    else:
        typer.echo(text, nl=False)
    if result["exit_code"]:
        raise typer.Exit(result["exit_code"])
