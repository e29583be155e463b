"""Host drift from a check run (``ansible-playbook --check --diff``): short lines, never file contents.

A check run reports each task that would change the host as ``changed``; ``--diff`` adds the before and
after text of files. Only *where* a change would land is kept (the diff's file headers, ``dest``/``path``,
a service's name and wanted state), so a recorded drift line can name ``/etc/postfix/main.cf`` but never
quote it: the diff of a template holding a password or a DKIM key must not reach the state or a log.
Tasks with ``no_log`` are censored by Ansible before we see them and show as ``(hidden: no_log)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from modules.providers import redact

HIDDEN = "(hidden: no_log)"
MAX_LINE = 240
SERVICE_ACTIONS = ("service", "systemd", "systemd_service", "sysvinit")
# Diff headers that name no file (content given inline, a state change).
_NOT_A_PATH = ("dynamically generated", "before", "after")


def _header_path(header: Any) -> str | None:
    if not isinstance(header, str) or not header.strip():
        return None
    text = header.strip().removesuffix(" (content)").removesuffix(" (file attributes)")
    if text.lower().startswith(_NOT_A_PATH) or not text.startswith("/"):
        return None
    return text


def targets(result: Mapping[str, Any], action: str = "") -> list[str]:
    """What one task result (or loop item) would change: file paths, a service and its state."""
    if result.get("censored") or result.get("_ansible_no_log"):
        return [HIDDEN]
    found: list[str] = []
    diffs = result.get("diff")
    for diff in [diffs] if isinstance(diffs, Mapping) else diffs if isinstance(diffs, list) else []:
        if isinstance(diff, Mapping):
            for key in ("before_header", "after_header"):
                path = _header_path(diff.get(key))
                if path:
                    found.append(path)
                    break
    for key in ("dest", "path"):
        value = result.get(key)
        if isinstance(value, str) and value.startswith("/"):
            found.append(value)
    short_action = action.rpartition(".")[2]
    if short_action in SERVICE_ACTIONS and isinstance(result.get("name"), str):
        state = result.get("state") or ("enabled" if result.get("enabled") else "")
        found.append(f"{result['name']} {state}".strip())
    for item in result.get("results") or []:
        if isinstance(item, Mapping) and item.get("changed"):
            found += targets(item, action)
    return list(dict.fromkeys(found))


def changed_result(event_data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The part of a ``runner_on_ok`` event worth keeping when the task would change the host, else None.

    Runs in the ansible-runner worker: contents stay there (its private folder is removed after the run).
    """
    result = event_data.get("res") or {}
    if not isinstance(result, Mapping) or not result.get("changed"):
        return None
    action = str(event_data.get("resolved_action") or event_data.get("task_action") or "")
    return {
        "host": str(event_data.get("host") or "?"),
        "task": str(event_data.get("task") or "?"),
        "action": action,
        "targets": targets(result, action),
    }


def drift_lines(changes: Iterable[Mapping[str, Any]], secrets: Iterable[str] = ()) -> list[str]:
    """``task name: what would change`` per would-change task, in run order, redacted and bounded."""
    secrets = [s for s in secrets if s]
    lines: list[str] = []
    for change in changes:
        what = ", ".join(change.get("targets") or []) or str(change.get("action") or "would change")
        line = redact(" ".join(f"{change.get('task', '?')}: {what}".split()), *secrets)
        if len(line) > MAX_LINE:
            line = line[: MAX_LINE - 1] + "…"
        if line not in lines:
            lines.append(line)
    return lines


def failure_lines(failures: Iterable[Any], secrets: Iterable[str] = ()) -> list[str]:
    """An unreachable host or a task that failed in check mode, as drift lines (one line each)."""
    secrets = [s for s in secrets if s]
    lines = []
    for failure in failures:
        message = " ".join(str(failure.message).split())[:160]
        if failure.unreachable:
            line = (
                f"unreachable: {failure.host} did not answer ({message}); the next up fails on this host only"
            )
        else:
            line = f"{failure.task}: check failed ({message})"
        lines.append(redact(line, *secrets))
    return list(dict.fromkeys(lines))
