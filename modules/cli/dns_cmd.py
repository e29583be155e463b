"""`penguinmails dns verify`: ask a DNS server what it really publishes for a stack's sending domains."""

from __future__ import annotations

import typer

from modules.cli.console import console
from modules.cli.pulumi_json import pulumi_json
from modules.dns.lookup import lookup_for
from modules.dns.verify import DomainReport, expectations_from_output, verify

app = typer.Typer(no_args_is_help=True, help="DNS and email authentication records.")


def stack_verification(stack: str) -> list[dict]:
    """The ``dns_verification`` output of a stack (what the toolkit published and expects to see)."""
    args = ["stack", "output", "dns_verification", "--json", "--stack", stack]
    return pulumi_json(args, f"output dns_verification of stack {stack!r}", empty=[]) or []


def render(reports: list[DomainReport]) -> int:
    failed = 0
    for report in reports:
        colour = "green" if report.passed else "red"
        console.print(f"[{colour}]{report.domain}[/{colour}]")
        for result in report.results:
            mark = "[green]pass[/green]" if result.passed else "[red]FAIL[/red]"
            console.print(f"  {result.check:<8} {mark}  {result.reason}")
        failed += not report.passed
    console.print(f"{len(reports) - failed} of {len(reports)} domain(s) pass every check")
    return failed


@app.command("verify")
def verify_command(
    stack: str = typer.Option("dev", "--stack", "-s", help="Stack whose published records to check."),
    server: list[str] = typer.Option(
        None, "--server", help="DNS server(s) to ask, e.g. 127.0.0.1:5353 (default: the system resolver)."
    ),
) -> None:
    """Report SPF, DKIM, DMARC, MX, MTA-STS, TLS-RPT and PTR per domain as pass or fail, with the reason."""
    expectations = expectations_from_output(stack_verification(stack))
    if not expectations:
        console.print(f"stack {stack!r} publishes no sending domains")
        return
    if render(verify(expectations, lookup_for(server or None))):
        raise typer.Exit(1)
