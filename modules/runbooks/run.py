"""Run one runbook with ansible-runner, the same way ``pulumi up`` runs the mail playbook.

The runbook playbooks live beside the converge playbooks, so this reuses :mod:`modules.ansible.runner`'s
worker process, 0600 variable files in a private folder, scrubbed artifacts and redacted failures; only the
playbook path and the ``--check --diff`` switches differ. The stack's mail variables and secrets (for
``reconverge``) are read from the stack's state with ``pulumi stack export --show-secrets`` into memory and
reach Ansible as a 0600 file, never on a command line or in output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modules.ansible import runner
from modules.cli.pulumi_json import pulumi_json
from modules.runbooks.catalog import Runbook, RunbookError

MAIL_PLAYBOOK = "mailhost.yml"


class RunbookFailed(RunbookError):
    """The runbook ran and failed on a host; names it, the task and the next step."""

    exit_code = 1

    def __init__(self, message: str, run: runner.PlaybookRun):
        super().__init__(message)
        self.run = run


def _secret_value(value: Any) -> Any:
    """A secret input as ``pulumi stack export --show-secrets`` prints it (``{sig, plaintext: json}``)."""
    if isinstance(value, Mapping) and "plaintext" in value:
        return json.loads(value["plaintext"])
    return value


def mail_vars_from_export(export: Mapping[str, Any], host: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The plain and secret variables the stack's mail playbook resource(s) converge ``host`` with."""
    resources = ((export.get("deployment") or {}).get("resources")) or []
    for resource in resources:
        inputs = resource.get("inputs") or {}
        if not str(resource.get("type", "")).endswith("ansible:Playbook"):
            continue
        if inputs.get("playbook") != MAIL_PLAYBOOK:
            continue
        names = {h.get("name") for h in _secret_value(inputs.get("hosts")) or [] if isinstance(h, Mapping)}
        if host in names:
            plain = runner.whole_numbers(_secret_value(inputs.get("vars")) or {})
            secret = runner.whole_numbers(_secret_value(inputs.get("secret_vars")) or {})
            return dict(plain), dict(secret)
    raise RunbookError(
        f"host {host!r}: no mail playbook resource of the stack converges it; run `pulumi up` first"
    )


def mail_vars_from_stack(stack: str, host: str, cwd: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    export = pulumi_json(
        ["stack", "export", "--show-secrets", "--stack", stack], f"the state of stack {stack!r}", cwd, {}
    )
    return mail_vars_from_export(export, host)


def run_runbook(
    book: Runbook,
    inventory_text: str,
    *,
    stack: str,
    extra_vars: Mapping[str, Any] | None = None,
    secret_vars: Mapping[str, Any] | None = None,
    check: bool = False,
    limit: str | None = None,
    timeout: int = runner.DEFAULT_TIMEOUT,
) -> runner.PlaybookRun:
    """Run ``playbooks/runbooks/<name>.yml``; ``check`` adds ``--check --diff``. Raise on any failure."""
    reasons = runner.vars_problems(extra_vars, "vars") + runner.vars_problems(secret_vars, "secret_vars")
    if reasons:
        raise RunbookError(f"runbook {book.name}: " + "; ".join(reasons))
    if not book.playbook.is_file():
        raise RunbookError(f"runbook {book.name}: {book.playbook} is missing")
    try:
        run = runner.execute(
            f"playbooks/runbooks/{book.name}.yml",
            inventory_text,
            stack=stack,
            what=f"runbook {book.name}: could not run",
            extra_vars={"runbook_stack": stack, **(extra_vars or {})},
            secret_vars=secret_vars,
            timeout=timeout,
            limit=limit,
            check=check,
            # On-call reads a runbook's check run in its log, as of a real one.
            private_check_artifacts=False,
            # The controller runbooks' implicit localhost: no inventory warning on every run.
            extra_env={"ANSIBLE_LOCALHOST_WARNING": "false"},
            failure_events=_command_errors,
        )
    except runner.AnsibleError as exc:
        raise RunbookError(str(exc)) from None
    failed = any(s.failed or s.unreachable for s in run.hosts.values())
    if run.status != "successful" or run.rc != 0 or failed or not run.hosts:
        raise RunbookFailed(_failure_message(book, run), run)
    return run


def _command_errors(events: list[dict]) -> list[dict]:
    """A failed ``penguinmails`` command says why on stderr; Ansible's msg only says "non-zero return code"."""
    for event in events:
        res = (event.get("event_data") or {}).get("res") or {}
        if res.get("msg") == "non-zero return code" and str(res.get("stderr") or "").strip():
            res["msg"] = str(res["stderr"]).strip().splitlines()[-1].removeprefix("error: ")
    return events


def _failure_message(book: Runbook, run: runner.PlaybookRun) -> str:
    if run.failures:
        first = run.failures[0]
        verb = "could not reach" if first.unreachable else "failed on"
        return (
            f"runbook {book.name} {verb} host {first.host} at task {first.task!r}: {first.message} "
            f"(nothing after that task ran there; see docs/runbooks.md, log {run.artifact_dir}/stdout)"
        )
    return f"runbook {book.name}: ended with status {run.status} (rc {run.rc}); see {run.artifact_dir}/stdout"


def changes(run: runner.PlaybookRun) -> dict[str, int]:
    return {host: stats.changed for host, stats in sorted(run.hosts.items())}
