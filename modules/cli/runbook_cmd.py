"""`penguinmails runbook`: the on-call runbooks (ansible/playbooks/runbooks/, docs/runbooks.md).

`runbook list` shows them; `runbook NAME --stack S --check` runs one in check mode with diff (nothing
changes), without `--check` for real. Hosts come from the stack's generated inventory; an unknown host,
runbook or variable fails before ansible-playbook starts.
"""

from __future__ import annotations

from pathlib import Path

import typer

from modules.cli.console import console
from modules.providers import redact
from modules.runbooks import catalog
from modules.runbooks import run as rb

app = typer.Typer(no_args_is_help=True, help=__doc__)

STACK = typer.Option("dev", "--stack", "-s", help="Stack whose generated inventory to use.")
CHECK = typer.Option(False, "--check", help="Check mode with diff: show what would change, change nothing.")
EXTRA = typer.Option([], "--extra-vars", "-e", help="key=value (repeatable), e.g. -e runbook_host=mx-01.")
LIMIT = typer.Option(None, "--limit", "-l", help="The one host (reconverge), as ansible-playbook's --limit.")
CWD = typer.Option(Path("."), "--cwd", help="Folder holding Pulumi.yaml.")
QUIET = typer.Option(False, "--quiet", "-q", help="Only the summary line, not Ansible's output.")


@app.command("list")
def list_command() -> None:
    """The runbooks, one line each (and the ones left out until their command exists)."""
    for book in catalog.RUNBOOKS.values():
        console.print(f"{book.name:<20} {book.summary}", soft_wrap=True)
    for name, why in catalog.NOT_YET.items():
        console.print(f"[dim]{name:<20} not available: {why}[/dim]", soft_wrap=True)


def execute(
    name: str, stack: str, check: bool, extra: list[str], limit: str | None, cwd: Path, quiet: bool = False
) -> int:
    """Validate, run, print Ansible's output and a summary; the changed-task count per host is returned."""
    book = catalog.get(name)
    extra_vars = catalog.parse_extra_vars(extra)
    _, text = catalog.read_inventory(stack)
    host = catalog.target_host(book, text, extra_vars, limit)
    problems = catalog.controller_problems(book, extra_vars)
    if problems:
        raise catalog.RunbookError(f"runbook {book.name}: " + "; ".join(problems))
    secret_vars: dict = {}
    if book.needs_mail_vars and host:
        plain, secret_vars = rb.mail_vars_from_stack(stack, host, cwd)
        extra_vars = {**plain, **extra_vars}
    if book.target != "limit":
        limit = None  # the playbook picks its host from runbook_host; its localhost play must not be limited
    run = rb.run_runbook(
        book, text, stack=stack, extra_vars=extra_vars, secret_vars=secret_vars, check=check, limit=limit
    )
    if not quiet:
        log = Path(run.artifact_dir) / "stdout"
        if log.is_file():
            # Plain text: Ansible's "[host]" must not be read as console markup.
            print(redact(log.read_text(errors="replace"), *rb.runner.secret_strings(secret_vars)).rstrip())
    mode = "check mode: would change" if check else "changed"
    counts = ", ".join(f"{h} {n}" for h, n in rb.changes(run).items())
    console.print(
        f"runbook {book.name} ({stack}) done in {run.duration_seconds:.0f} s; {mode}: {counts}",
        soft_wrap=True,
    )
    return run.changed


def _register(book: catalog.Runbook) -> None:
    def command(
        stack: str = STACK,
        check: bool = CHECK,
        extra: list[str] = EXTRA,
        limit: str | None = LIMIT,
        cwd: Path = CWD,
        quiet: bool = QUIET,
    ) -> None:
        execute(book.name, stack, check, extra, limit, cwd, quiet)

    command.__doc__ = book.summary + " See docs/runbooks.md."
    app.command(book.name)(command)


for _book in catalog.RUNBOOKS.values():
    _register(_book)
