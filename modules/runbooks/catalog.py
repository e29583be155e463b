"""Which runbooks exist, what each needs, and the checks that run before any host is touched.

Each runbook is a playbook under ``ansible/playbooks/runbooks/``. ``host`` runbooks act on one mail host of
the stack's generated inventory (named by ``runbook_host`` or ``--limit``); ``controller`` runbooks run
``penguinmails`` commands on this machine. The checks here repeat the playbooks' own first play so the CLI
fails fast, before ansible-runner starts, with a message naming the host and the next step; the playbooks
keep their checks for plain ``ansible-playbook`` runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from modules.ansible import runner
from modules.errors import ToolkitError, ValidationError

RUNBOOK_DIR = runner.ANSIBLE_DIR / "playbooks" / "runbooks"
TIERS = ("oltp", "content", "analytics", "queue")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


class RunbookError(ToolkitError):
    """A runbook request that cannot run (unknown runbook, host, missing inventory or variable)."""

    exit_code = 2


@dataclass(frozen=True)
class Runbook:
    name: str
    summary: str
    kind: Literal["host", "controller"]
    # How the target host is named: the runbook_host variable, or --limit (reconverge).
    target: Literal["var", "limit", "none"] = "var"
    # Whether the run needs the stack's mail playbook variables and secrets (the mail roles).
    needs_mail_vars: bool = False

    @property
    def playbook(self) -> Path:
        return RUNBOOK_DIR / f"{self.name}.yml"


RUNBOOKS: dict[str, Runbook] = {
    r.name: r
    for r in (
        Runbook("drain", "Stop one mail host sending: Postfix defers SMTP, queued mail held.", "host"),
        Runbook("undrain", "Undo drain: SMTP transports back, held mail released and flushed.", "host"),
        Runbook(
            "reconverge",
            "Run the mail playbook on one host (repairs hand edits); refuses a drained host.",
            "host",
            target="limit",
            needs_mail_vars=True,
        ),
        Runbook(
            "replay-dead-letters",
            "Put a queue's dead letters back with fresh attempts (check mode: list only).",
            "controller",
            target="none",
        ),
        Runbook(
            "restore-tier",
            "Restore a tier's latest backup (or --to time) into a new cluster (check mode: db info).",
            "controller",
            target="none",
        ),
    )
}
# Asked for in issue 14 but left out: the command they need does not exist yet (docs/runbooks.md).
NOT_YET = {
    "rotate-dkim": "no command rotates one domain's key: edit dkim_selector/dkim_previous_selectors, pulumi up",
    "quarantine-ip": "no command sets an IP's quarantine by hand: the reputation checker decides it",
}


def get(name: str) -> Runbook:
    if name in RUNBOOKS:
        return RUNBOOKS[name]
    hint = f" ({NOT_YET[name]})" if name in NOT_YET else ""
    raise RunbookError(f"no runbook {name!r}{hint}; `penguinmails runbook list` shows them")


def parse_extra_vars(pairs: list[str]) -> dict[str, Any]:
    """``-e key=value`` (value read as YAML, so ``[1, 2]`` and ``true`` work) or ``-e '{json}'``."""
    found: dict[str, Any] = {}
    for pair in pairs:
        if pair.lstrip().startswith("{"):
            try:
                data = yaml.safe_load(pair)
            except yaml.YAMLError:
                raise RunbookError(f"-e {pair!r}: not a YAML/JSON mapping") from None
            if not isinstance(data, Mapping):
                raise RunbookError(f"-e {pair!r}: not a mapping")
            found.update(data)
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RunbookError(f"-e {pair!r}: expected key=value")
        try:
            parsed = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            parsed = value
        # A time such as 2026-12-03 15:00:00+00 stays text (YAML would make it a datetime).
        found[key.strip()] = parsed if isinstance(parsed, str | int | float | bool | list | dict) else value
    problems = runner.vars_problems(found, "-e")
    if problems:
        raise ValidationError("runbook variables", problems)
    return found


def inventory_hosts(text: str) -> dict[str, list[str]]:
    """Group name → host names of a generated inventory (``all.children.<group>.hosts``)."""
    data = yaml.safe_load(text) or {}
    children = ((data.get("all") or {}).get("children") or {}) if isinstance(data, Mapping) else {}
    return {group: sorted((body or {}).get("hosts") or {}) for group, body in children.items()}


def read_inventory(stack: str) -> tuple[Path, str]:
    path = runner.inventory_path(stack)
    if not path.is_file():
        raise RunbookError(
            f"stack {stack!r} has no generated inventory at {path}: run `pulumi up --stack {stack}` first"
        )
    return path, path.read_text()


def target_host(
    book: Runbook, inventory_text: str, extra: Mapping[str, Any], limit: str | None
) -> str | None:
    """The one mail host the runbook acts on, checked against the inventory; None for controller runbooks."""
    if book.kind == "controller":
        return None
    hosts = inventory_hosts(inventory_text).get("mailhosts", [])
    listed = ", ".join(hosts) or "none"
    if book.target == "limit":
        name = limit
        how = "--limit <name>"
    else:
        name = extra.get("runbook_host")
        how = "-e runbook_host=<name>"
        if limit and limit != name:
            raise RunbookError(f"runbook {book.name}: --limit {limit} differs from runbook_host={name}")
    if not name:
        raise RunbookError(f"runbook {book.name} acts on one mail host: pass {how} (mail hosts: {listed})")
    if name not in hosts:
        raise RunbookError(
            f"runbook {book.name}: host {name!r} is not a mail host of this inventory (mail hosts: {listed}); "
            "check the name, or run `pulumi up` if the host is new"
        )
    return str(name)


def controller_problems(book: Runbook, extra: Mapping[str, Any]) -> list[str]:
    """What a controller runbook is missing; the playbook's assert says the same for plain runs."""
    reasons = []
    if book.name == "replay-dead-letters":
        tenant = extra.get("runbook_tenant")
        if tenant and not _UUID_RE.match(str(tenant)):
            reasons.append(f"runbook_tenant: {tenant!r} is not a uuid")
        ids = extra.get("runbook_ids", [])
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            reasons.append("runbook_ids: must be a list of job ids, e.g. -e 'runbook_ids=[12, 13]'")
        if not (extra.get("runbook_queue") or tenant or ids or extra.get("runbook_all") is True):
            reasons.append(
                "name -e runbook_queue=<queue>, runbook_tenant=<uuid>, runbook_ids=[…] or runbook_all=true"
            )
    if book.name == "restore-tier":
        if extra.get("runbook_tier") not in TIERS:
            reasons.append(f"runbook_tier: {extra.get('runbook_tier')!r} must be one of {', '.join(TIERS)}")
        target = extra.get("runbook_target")
        if not isinstance(target, str) or not target.startswith("/"):
            reasons.append(f"runbook_target: {target!r} must be the absolute path of a new data folder")
        elif Path(target).exists() and any(Path(target).iterdir()):
            reasons.append(f"runbook_target: {target} exists and is not empty (the restore never overwrites)")
    return reasons
