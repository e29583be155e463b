"""`penguinmails devenv start|stop|status`: the local embedded services of the dev stack."""

from __future__ import annotations

import typer

from devenv.registry import control
from modules.cli.console import console

app = typer.Typer(no_args_is_help=True, help="Local embedded services (loopback only).")


def _show(action: str, names: list[str] | None) -> None:
    statuses, failed = control(action, names)
    for status in statuses:
        colour = "green" if status.running else "yellow"
        state = "running" if status.running else ("idle" if status.idle else "stopped")
        console.print(
            f"{status.name:<21} [{colour}]{state:<8}[/{colour}] {status.address:<22} {status.detail}"
        )
    if failed:
        raise typer.Exit(1)


@app.command()
def start(names: list[str] | None = typer.Argument(None, help="Services (default: all).")) -> None:
    """Start services (idempotent)."""
    _show("start", names)


@app.command()
def stop(names: list[str] | None = typer.Argument(None)) -> None:
    """Stop services."""
    _show("stop", names)


@app.command()
def status(names: list[str] | None = typer.Argument(None)) -> None:
    """Show whether each service runs."""
    _show("status", names)
