"""`penguinmails warmup`: each sending IP's warm-up plan, day, caps and last decision; hold and resume.

Reads the stack's output ``postgres_oltp_warmup_url`` (secret, never printed) and works as the oltp tier's
``warmup`` role, which changes warm-up state through the ``warmup.*`` functions only.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from modules.cli.console import console
from modules.cli.pulumi_json import pulumi_json
from modules.errors import ToolkitError
from modules.reputation.warmup import WarmupPlan
from modules.reputation.warmup_store import StoredPlan, WarmupStore

app = typer.Typer(no_args_is_help=True, help=__doc__)

STACK = typer.Option("dev", "--stack", "-s", help="Stack whose sending IPs to show or steer.")
CWD = typer.Option(Path("."), "--cwd", help="Folder holding Pulumi.yaml.")
IP = typer.Option(None, "--ip", help="Only this sending IP.")
OUTPUT = "postgres_oltp_warmup_url"


def connect(stack: str, cwd: Path) -> WarmupStore:
    outputs = pulumi_json(
        ["stack", "output", "--json", "--show-secrets", "--stack", stack],
        f"the outputs of {stack!r}",
        cwd,
        {},
    )
    if not outputs.get(OUTPUT):
        raise ToolkitError(f"stack {stack!r} has no {OUTPUT} output: run `pulumi up --stack {stack}`")
    return WarmupStore(outputs[OUTPUT], application_name="penguinmails-cli")


def select(plans: list[StoredPlan], ip: str | None) -> list[StoredPlan]:
    if ip is None:
        return plans
    found = [p for p in plans if p.ip == ip]
    if not found:
        raise ToolkitError(
            f"--ip {ip}: not a sending IP of this stack ({', '.join(p.ip for p in plans) or 'none'})"
        )
    return found


def status_rows(plans: list[StoredPlan]) -> list[dict[str, object]]:
    """One row per IP: status, day, caps, the last recorded figures and decision."""
    rows = []
    for p in plans:
        decision = p.last_decision or {}
        rows.append(
            {
                "ip": p.ip,
                "status": p.status,
                "day": None if p.state is None else p.state.day,
                "days": None if p.plan is None else p.plan.days,
                "held": None if p.state is None else p.state.held,
                "held_reason": p.held_reason,
                "daily_cap": None if p.caps is None else p.caps.daily,
                "hourly_cap": None if p.caps is None else p.caps.hourly,
                "provider_caps": None if p.caps is None else p.caps.providers,
                "figures": decision.get("figures"),
                "decision": decision.get("action"),
                "reason": decision.get("reason"),
                "decided_at": decision.get("at"),
            }
        )
    return rows


@app.command("status")
def status_command(
    stack: str = STACK, cwd: Path = CWD, ip: str | None = IP, as_json: bool = typer.Option(False, "--json")
) -> None:
    """Each IP's day, caps, the figures of its current day and the last decision."""
    rows = status_rows(select(connect(stack, cwd).plans(), ip))
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    console.print(f"{'ip':<16} {'status':<12} {'day':>7} {'daily':>7} {'hourly':>7}  decision")
    for r in rows:
        day = "-" if r["day"] is None else f"{r['day']}/{r['days']}"
        held = " [held: " + (r["held_reason"] or "no reason given") + "]" if r["held"] else ""
        figures = r["figures"] or {}
        seen = (
            f" (sent {figures.get('delivered', 0)}, deferred {figures.get('deferred', 0)}, "
            f"bounced {figures.get('bounced', 0)})"
            if figures
            else ""
        )
        console.print(
            f"{r['ip']:<16} {r['status']:<12} {day:>7} {r['daily_cap'] or '-':>7} {r['hourly_cap'] or '-':>7}  "
            f"{r['decision'] or 'no plan yet'}: {r['reason'] or ''}{seen}{held}"
        )
    if not rows:
        console.print("(no sending IPs)")


@app.command("plan")
def plan_command(
    stack: str = typer.Option(
        None, "--stack", "-s", help="Show this stack's IPs' plan (default: the default plan)."
    ),
    cwd: Path = CWD,
    ip: str | None = IP,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The plan table: daily, hourly and per-provider caps for every day."""
    plan = WarmupPlan()
    current = None
    if stack is not None:
        chosen = [p for p in select(connect(stack, cwd).plans(), ip) if p.plan is not None]
        if chosen:
            plan, current = chosen[0].plan, chosen[0].state.day if ip else None
    table = [c.as_dict() for c in plan.table()]
    if as_json:
        print(json.dumps({"plan": plan.model_dump(), "days": table}, indent=2))
        return
    groups = sorted(plan.provider_shares)
    console.print(f"{'day':>4} {'daily':>8} {'hourly':>7} " + " ".join(f"{g:>10}" for g in groups))
    for row in table:
        mark = " ←" if row["day"] == current else ""
        console.print(
            f"{row['day']:>4} {row['daily']:>8} {row['hourly']:>7} "
            + " ".join(f"{row['providers'][g]:>10}" for g in groups)
            + mark
        )
    console.print(
        f"hold above {plan.max_deferral_rate:.0%} deferrals; back off {plan.back_off_days} days above "
        f"{plan.max_bounce_rate:.0%} bounces or {plan.max_complaint_rate:.1%} complaints; "
        f"re-warm after {plan.idle_rewarm_days} idle days"
    )


@app.command("hold")
def hold_command(
    stack: str = STACK,
    cwd: Path = CWD,
    ip: str = typer.Option(..., "--ip", help="The sending IP to hold."),
    reason: str = typer.Option("", "--reason", help="Why (shown by status)."),
) -> None:
    """Keep an IP on its day: the job decides nothing for it until it is resumed."""
    connect(stack, cwd).hold(ip, True, reason or None)
    console.print(f"{ip}: held")


@app.command("resume")
def resume_command(
    stack: str = STACK, cwd: Path = CWD, ip: str = typer.Option(..., "--ip", help="The sending IP to resume.")
) -> None:
    """Let the warm-up job move a held IP again."""
    connect(stack, cwd).hold(ip, False)
    console.print(f"{ip}: resumed")
