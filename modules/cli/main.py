"""`penguinmails`: the toolkit's command line. Thin typer commands over plain, tested functions."""

from __future__ import annotations

import typer

from modules.cli import (
    audit_cmd,
    config_cmd,
    db_cmd,
    devenv_cmd,
    dns_cmd,
    fleet_cmd,
    monitoring_cmd,
    preview_cmd,
    queue_cmd,
    runbook_cmd,
    warmup_cmd,
)
from modules.cli.console import errors
from modules.errors import ToolkitError

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(config_cmd.app, name="config")
app.add_typer(db_cmd.app, name="db")
app.add_typer(devenv_cmd.app, name="devenv")
app.add_typer(dns_cmd.app, name="dns")
app.add_typer(fleet_cmd.app, name="fleet")
app.add_typer(monitoring_cmd.app, name="monitoring")
app.add_typer(queue_cmd.app, name="queue")
app.add_typer(runbook_cmd.app, name="runbook")
app.add_typer(warmup_cmd.app, name="warmup")
app.command("audit")(audit_cmd.audit)
app.command("preview")(preview_cmd.preview)
state = {"verbose": False}


@app.callback()
def root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks of errors.")) -> None:
    """PenguinMails infrastructure toolkit."""
    state["verbose"] = verbose


def run() -> None:
    """Entry point: toolkit errors become a message and their exit code, never a traceback."""
    try:
        # Without standalone mode click *returns* the code of a `typer.Exit(n)` instead of exiting.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            raise SystemExit(code)
    except ToolkitError as error:
        if state["verbose"]:
            raise
        errors.print(f"[red]error:[/red] {error.message}")
        raise SystemExit(error.exit_code) from None
    except typer.Exit as done:
        raise SystemExit(done.exit_code) from None
    except (typer.Abort, KeyboardInterrupt):
        raise SystemExit(130) from None
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        raise
