"""Policy results of a preview, for the summary a pull request shows.

``pulumi preview --json`` (the PreviewDigest) carries no policy results: the engine reports them only as
``policyEvent`` engine events. So the preview also writes its event log (``--event-log``, which the CLI only
offers with ``PULUMI_DEBUG_COMMANDS=true``, as the Automation API sets it) and this module reads the
violations from there: one entry per rule and resource, mandatory first. An event's message is the policy's
description, a newline, then the violation itself; the summary keeps both apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modules.engine import REPO_ROOT

PACK_FILE = "PulumiPolicy.yaml"
HOST_DIR = REPO_ROOT / "tools" / "policy-host"
HOST_PLUGIN = "pulumi-language-penguinmails-policy"
LEVELS = ("mandatory", "advisory")


def default_pack(cwd: Path) -> Path | None:
    """``policies/`` beside the project's Pulumi.yaml, when it holds a policy pack."""
    pack = (cwd / "policies").resolve()
    return pack if (pack / PACK_FILE).is_file() else None


def engine_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a preview with policy packs: the event log allowed, the pack's host findable.

    The host is installed beside the engine by ``make engine``; an engine built before the pack existed lacks
    it, so the copy in tools/policy-host/ goes on PATH after the engine's.
    """
    env = dict(os.environ if base is None else base)
    env["PULUMI_DEBUG_COMMANDS"] = "true"
    path = env.get("PATH", "")
    if str(HOST_DIR) not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join([path, str(HOST_DIR)]) if path else str(HOST_DIR)
    return env


def read_events(path: Path) -> list[dict[str, Any]]:
    """The engine's event log (one JSON object a line); a missing or torn log reads as what it holds."""
    events = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def results(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each policy violation once: policy, level, pack, resource urn and name, message, description."""
    found: dict[tuple, dict[str, Any]] = {}
    for event in events:
        policy = event.get("policyEvent")
        if not isinstance(policy, dict):
            continue
        description, _, message = str(policy.get("message", "")).strip().partition("\n")
        if not message:
            description, message = "", description
        urn = str(policy.get("resourceUrn") or "")
        entry = {
            "policy": policy.get("policyName", ""),
            "level": policy.get("enforcementLevel", ""),
            "pack": policy.get("policyPackName", ""),
            "urn": urn,
            "resource": urn.rsplit("::", 1)[-1] if urn else "",
            "message": message.strip(),
            "description": description.strip(),
        }
        found[(entry["policy"], entry["urn"], entry["message"])] = entry
    rank = {level: i for i, level in enumerate(LEVELS)}
    return sorted(found.values(), key=lambda e: (rank.get(e["level"], 9), e["policy"], e["resource"]))


def is_host_notice(message: str) -> bool:
    """The engine warns whenever a plugin comes from PATH; for the pack's own host that is expected."""
    return HOST_PLUGIN in message and "from $PATH" in message


def counts(found: list[dict[str, Any]]) -> dict[str, int]:
    return {level: sum(1 for e in found if e["level"] == level) for level in LEVELS}


def markdown_lines(found: list[dict[str, Any]]) -> list[str]:
    """The summary's policy section: mandatory violations first, then advisories, by rule and resource."""
    if not found:
        return []
    tally = counts(found)
    out = [
        "",
        f"**Policy: {tally['mandatory']} mandatory violation(s), {tally['advisory']} advisory warning(s)**",
        "",
        "| level | policy | resource | message |",
        "|---|---|---|---|",
    ]
    out += [
        f"| {e.get('level', '')} | {e.get('policy', '')} | {e.get('resource') or e.get('urn') or '(stack)'} | "
        f"{str(e.get('message', '')).replace('|', '/')} |"
        for e in found
    ]
    return out
