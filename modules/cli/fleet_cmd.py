"""`penguinmails fleet orphans`: servers that carry the stack's fleet tag but are not in its state."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from modules.cli.console import console
from modules.cli.pulumi_json import pulumi_json
from modules.errors import ToolkitError
from modules.hostwinds.common import settings_from
from modules.hostwinds.orphans import find_orphans, fleet_of, terminate_orphans
from modules.providers import ProviderSettings

app = typer.Typer(no_args_is_help=True, help="The Hostwinds fleet.")
ORPHANS_LEFT = 3  # exit code: orphans were found and left running


def stack_settings(stack: str, cwd: Path) -> ProviderSettings:
    """The stack's config as its providers see it (secrets decrypted with the stack's passphrase)."""
    raw = pulumi_json(
        ["config", "--json", "--show-secrets", "--stack", stack], f"the config of {stack!r}", cwd, {}
    )
    return ProviderSettings(
        {key: entry.get("value") for key, entry in raw.items() if isinstance(entry, dict)}
    )


@app.command("orphans")
def orphans_command(
    stack: str = typer.Option("dev", "--stack", "-s", help="Stack whose fleet tag to look for."),
    cwd: Path = typer.Option(Path("."), "--cwd", help="Folder holding Pulumi.yaml."),
    terminate: bool = typer.Option(False, "--terminate", help="Terminate the orphans (needs --yes)."),
    yes: bool = typer.Option(False, "--yes", help="Confirm --terminate."),
    as_json: bool = typer.Option(False, "--json", help="Print the orphans as JSON."),
) -> None:
    """List (and with --terminate --yes remove) servers ordered by this stack that its state lost.

    Exit code 3 when orphans were found and left running, 0 otherwise.
    """
    if terminate and not yes:
        raise ToolkitError("--terminate removes servers for good: add --yes to confirm")
    deployment = pulumi_json(["stack", "export", "--stack", stack], f"the state of {stack!r}", cwd, {})
    fleet = fleet_of(deployment.get("deployment") or {}, stack)
    if terminate and fleet.in_flight:
        raise ToolkitError(
            f"stack {stack!r} has {fleet.in_flight} operation(s) under way (an `up` is running or crashed): "
            "what it just ordered is not in the state yet. Let it finish (or `pulumi cancel`) and try again"
        )
    if not fleet.tags:
        console.print(f"stack {stack!r} has no fleet tag in its state yet: nothing can be proven ours")
        return
    client = settings_from(stack_settings(stack, cwd)).client()
    orphans = find_orphans(fleet, client.instance_list())
    if as_json:
        console.print_json(json.dumps(orphans))
    else:
        for row in orphans:
            console.print(
                f"{row['service_id']:<10} {row['label']:<48} {row['status']:<8} {row['main_ip'] or '-':<16} "
                f"{row['created_at']}"
            )
        console.print(f"{len(orphans)} orphan(s) carry the tag of stack {stack!r} and are not in its state")
    if orphans and terminate:
        for line in terminate_orphans(client, fleet, orphans):
            console.print(f"  {line}")
    elif orphans:
        raise typer.Exit(ORPHANS_LEFT)
