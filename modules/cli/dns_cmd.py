"""`penguinmails dns verify`: ask a DNS server what it really publishes for a stack's sending domains."""

from __future__ import annotations

from pathlib import Path

import typer

from modules.cli.console import console
from modules.cli.pulumi_json import pulumi_json
from modules.config.loader import load_stack_file
from modules.dns.lookup import lookup_for
from modules.dns.sts_fetch import PolicyFetcher, ca_file_for
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
        None,
        "--server",
        help="DNS server(s) to ask, e.g. 127.0.0.1:5353 (default: the stack's dns.resolvers, else the system's).",
    ),
    domain: list[str] = typer.Option(None, "--domain", "-d", help="Check only these sending domains."),
    ca_file: Path = typer.Option(
        None,
        "--ca-file",
        help="CA bundle for the MTA-STS policy hosts (default: from the stack, see README).",
    ),
    project_dir: Path = typer.Option(Path("."), "--project-dir", help="Folder holding Pulumi.<stack>.yaml."),
) -> None:
    """Report SPF, DKIM, DMARC, MX, MTA-STS, TLS-RPT and PTR per domain as pass or fail, with the reason.

    MTA-STS is fetched over HTTPS from the address the same DNS servers give, validated against the CA bundle.
    """
    expectations = expectations_from_output(stack_verification(stack))
    if domain:
        expectations = [exp for exp in expectations if exp.domain in domain]
    if not expectations:
        console.print(f"stack {stack!r} publishes no sending domains" + (" of those given" if domain else ""))
        return
    resolvers, trusted = verify_settings(stack, project_dir)
    fetcher = PolicyFetcher(str(ca_file) if ca_file else trusted)
    if render(verify(expectations, lookup_for(server or resolvers or None), fetcher=fetcher)):
        raise typer.Exit(1)


def verify_settings(stack: str, project_dir: Path) -> tuple[list[str], str | None]:
    """The stack's resolvers and policy-host CA bundle from ``Pulumi.<stack>.yaml`` (none if it is absent)."""
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        return [], None
    config = load_stack_file(path)
    return list(config.dns.resolvers), ca_file_for(config)
