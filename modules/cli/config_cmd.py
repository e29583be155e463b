"""`penguinmails config validate`: check a stack's config file without the engine (fast, for CI)."""

from __future__ import annotations

from pathlib import Path

import typer

from modules.cli.console import console
from modules.config.loader import load_stack_file
from modules.config.model import StackConfig

app = typer.Typer(no_args_is_help=True, help="Stack configuration.")


def credentials(config: StackConfig) -> str:
    """Where the providers of this stack take their endpoints and secrets from (README: Configuration)."""
    if config.environment == "dev":
        return "devenv variables (tools/env.sh) first, then config and secret config"
    named = ", ".join(f"{key}={name}" for key, name in sorted(config.secrets_from_env.items()))
    return "config and secret config only" + (f"; CI variables {named}" if named else "")


def summary(config: StackConfig) -> list[str]:
    domains = [domain.name for _, domain in config.sending_domains()]
    return [
        f"credentials  {credentials(config)}",
        f"environment  {config.environment}",
        f"fleet        {config.fleet.nodes} node(s): {', '.join(config.fleet.node_names()) or '-'}",
        "postgres     " + ", ".join(f"{tier}={cfg.mode}" for tier, cfg in config.postgres.tiers().items()),
        f"redis        {config.redis.mode} {config.redis.host}:{config.redis.port}",
        f"dns zones    {', '.join(zone.name for zone in config.dns.zones) or '-'}",
        f"tenants      {len(config.tenants)} with {len(domains)} sending domain(s)",
    ]


@app.command()
def validate(
    stack: str = typer.Option("dev", "--stack", "-s", help="Validates Pulumi.<stack>.yaml."),
    project_dir: Path = typer.Option(Path("."), "--project-dir", help="Folder holding Pulumi.yaml."),
) -> None:
    """Validate Pulumi.<stack>.yaml and print what it declares."""
    config = load_stack_file(project_dir / f"Pulumi.{stack}.yaml")
    console.print(f"[green]ok[/green] Pulumi.{stack}.yaml is valid")
    for line in summary(config):
        console.print(f"  {line}")
