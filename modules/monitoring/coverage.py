"""Monitoring coverage as a figure: every component of a stack, its live scrape target and its alert rules.

The components come from the stack's *state* (``pulumi stack export``), and the targets and rules from the
Prometheus that watches it (its HTTP API), never from the plan that generated the targets: a node the
plan forgot, an exporter that is down, or a job no rule covers all show as gaps.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modules.errors import ToolkitError

# What each kind of component must be scraped by (exporter jobs; rules carry the same name in `covers`).
EXPECTED_JOBS = {
    "fleet": ("node", "postfix"),
    "postgres": ("postgres",),
    "redis": ("redis",),
    "dns": ("penguinmails",),
    "queue": ("penguinmails",),
    "reputation": ("penguinmails",),
    "monitoring": ("prometheus", "alertmanager"),
}
# The monitoring server's own targets are labelled by whoever runs it (the devenv, the monitoring role).
ANY_STACK_JOBS = ("prometheus", "alertmanager")


class CoverageError(ToolkitError):
    """Prometheus or the stack's state could not be read."""


@dataclass(frozen=True)
class Component:
    id: str  # fleet/mx-01, postgres/oltp, redis, dns, queue, reputation, monitoring
    jobs: tuple[str, ...]


@dataclass
class Row:
    component: str
    job: str
    targets: list[str] = field(default_factory=list)
    up: bool = False
    rules: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.up and bool(self.rules)

    def gap(self) -> str:
        if not self.targets:
            return "no scrape target"
        if not self.up:
            return "target down"
        return "no alert rule" if not self.rules else ""


def _name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def components_from_state(
    resources: Iterable[Mapping[str, Any]], stack_resource: str = "penguinmails"
) -> list[Component]:
    """The monitored components a stack's resources make up (from ``pulumi stack export``)."""
    found: dict[str, Component] = {}
    resources = list(resources)
    urns = {r["urn"]: r for r in resources}

    def add(component: str, kind: str) -> None:
        found.setdefault(component, Component(component, EXPECTED_JOBS[kind]))

    mail_converged = any(r.get("type") == "penguinmails:ansible:MailHosts" for r in resources)
    for res in resources:
        kind, name = res.get("type", ""), _name(res["urn"])
        parent = urns.get(res.get("parent") or "", {})
        if kind == "pulumi-python:dynamic/hostwinds:Vps" and mail_converged:
            if parent.get("type") == "penguinmails:hostwinds:VpsFleet" and _name(parent["urn"]).endswith(
                "-fleet"
            ):
                node = (res.get("outputs") or {}).get("name") or name.removeprefix(_name(parent["urn"]) + "-")
                add(f"fleet/{node}", "fleet")
                add("reputation", "reputation")
        elif kind == "penguinmails:postgres:Tier":
            tier = name.rsplit("-", 1)[-1]
            add(f"postgres/{tier}", "postgres")
            if tier == "queue":
                add("queue", "queue")
        elif kind in ("pulumi-python:dynamic/redis:User", "penguinmails:ansible:RedisHost"):
            add("redis", "redis")
        elif kind == "penguinmails:dns:MailDns":
            add("dns", "dns")
        elif kind == "pulumi-python:dynamic/monitoring:ScrapeTargets":
            add("monitoring", "monitoring")
    return sorted(found.values(), key=lambda c: c.id)


def _get(url: str, timeout: float = 10.0) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - an http(s) URL we were given
            body = json.load(answer)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise CoverageError(
            f"Prometheus at {url.split('/api/')[0]}: {exc}; is it running (make devenv-status)?"
        ) from None
    if body.get("status") != "success":
        raise CoverageError(f"Prometheus answered {body.get('status')}: {body.get('error')}")
    return body["data"]


def coverage(components: Iterable[Component], stack: str, prometheus_url: str) -> list[Row]:
    """One row per (component, expected job): the targets Prometheus scrapes for it and the rules covering it."""
    base = prometheus_url.rstrip("/")
    targets = _get(f"{base}/api/v1/targets?state=active")["activeTargets"]
    groups = _get(f"{base}/api/v1/rules?type=alert")["groups"]
    rules_by_job: dict[str, list[str]] = {}
    for group in groups:
        for rule in group.get("rules", []):
            covers = (rule.get("labels") or {}).get("covers")
            if covers:
                rules_by_job.setdefault(covers, []).append(rule["name"])
    rows = []
    for component in components:
        for job in component.jobs:
            row = Row(component.id, job, rules=sorted(set(rules_by_job.get(job, []))))
            health: list[bool] = []
            for target in targets:
                labels = target.get("labels") or {}
                if labels.get("job") != job:
                    continue
                if job in ANY_STACK_JOBS or (
                    labels.get("stack") == stack and labels.get("component") == component.id
                ):
                    row.targets.append(target.get("scrapeUrl") or labels.get("instance", "?"))
                    health.append(target.get("health") == "up")
            row.up = bool(health) and all(health)
            rows.append(row)
    return rows
