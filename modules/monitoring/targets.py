"""Prometheus scrape targets generated from the stack, so the `up` that creates a node also monitors it.

:func:`plan_targets` turns what the stack declares (fleet nodes, tiers, Redis, DNS, the queue) into
Prometheus ``file_sd`` groups per exporter job. A dev stack writes them with :class:`ScrapeTargets` into
the devenv Prometheus's target folder (``PENGUINMAILS_PROMETHEUS_TARGETS_DIR``); a real stack hands the
same groups to the ``monitoring`` role on its monitoring VPS.

Every group carries ``stack`` and ``component`` labels; ``penguinmails monitoring coverage`` matches the
stack's components (read from its state, not from this plan) against the targets Prometheus really
scrapes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi.dynamic as dynamic

from modules.errors import ToolkitError
from modules.providers import ProviderSettings

JOBS = ("node", "postfix", "postgres", "redis", "bind", "penguinmails", "prometheus", "alertmanager")
NODE_EXPORTER_PORT = 9100
POSTFIX_EXPORTER_PORT = 9154
# The devenv's exporters (devenv/monitoring.py), used by dev stacks only.
DEV_EXPORTERS = {
    "postgres": "127.0.0.1:9387",
    "redis": "127.0.0.1:9391",
    "bind": "127.0.0.1:9389",
    "penguinmails": "127.0.0.1:9395",
}
# The penguinmails exporter on a monitoring VPS, beside the Prometheus that scrapes it.
MONITORING_EXPORTER = "127.0.0.1:9395"
ENV_TARGETS_DIR = "PENGUINMAILS_PROMETHEUS_TARGETS_DIR"


class TargetsError(ToolkitError):
    """The scrape target files could not be written, or are not ours to change."""


@dataclass(frozen=True)
class TargetInputs:
    """What the stack monitors; built by the platform from its parts, validated by the config model."""

    stack: str
    nodes: Sequence[Mapping[str, str]] = ()  # mail hosts running the monitoring agent: [{name, ip}]
    tiers: Mapping[str, str] = field(default_factory=dict)  # tier -> database name
    redis: bool = False
    dns: bool = False  # zones the stack writes to a BIND it monitors
    queue: bool = False
    reputation: bool = False  # sending IPs checked against DNSBLs
    exporters: Mapping[str, Any] = field(
        default_factory=dict
    )  # job -> host:port (postgres: tier -> host:port)


def _group(address: str, stack: str, component: str, **labels: str) -> dict[str, Any]:
    return {"targets": [address], "labels": {"stack": stack, "component": component, **labels}}


def plan_targets(inputs: TargetInputs) -> dict[str, list[dict[str, Any]]]:
    """``{job: [file_sd group]}``; a component whose exporter is unknown gets no group (coverage shows it)."""
    stack, exporters = inputs.stack, inputs.exporters
    jobs: dict[str, list[dict[str, Any]]] = {}

    def add(job: str, group: dict[str, Any]) -> None:
        jobs.setdefault(job, []).append(group)

    for node in sorted(inputs.nodes, key=lambda n: n["name"]):
        labels = {"node": node["name"], "ip": node["ip"]}
        host = f"[{node['ip']}]" if ":" in node["ip"] else node["ip"]
        add("node", _group(f"{host}:{NODE_EXPORTER_PORT}", stack, f"fleet/{node['name']}", **labels))
        add("postfix", _group(f"{host}:{POSTFIX_EXPORTER_PORT}", stack, f"fleet/{node['name']}", **labels))
    postgres = exporters.get("postgres") or {}
    for tier, database in sorted(inputs.tiers.items()):
        address = postgres.get(tier) if isinstance(postgres, Mapping) else postgres
        if address:
            add("postgres", _group(address, stack, f"postgres/{tier}", tier=tier, datname=database))
    if inputs.redis and exporters.get("redis"):
        add("redis", _group(exporters["redis"], stack, "redis"))
    if inputs.dns and exporters.get("bind"):
        add("bind", _group(exporters["bind"], stack, "dns"))
    own = exporters.get("penguinmails")
    if own:
        for wanted, component in ((inputs.queue, "queue"), (inputs.reputation, "reputation"), (True, "dns")):
            if wanted and (component != "dns" or inputs.dns or inputs.reputation):
                add("penguinmails", _group(own, stack, component))
    return jobs


def dev_exporters(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The devenv's exporter addresses (overridable by ``PENGUINMAILS_<JOB>_EXPORTER``)."""
    env = os.environ if environ is None else environ
    return {
        job: env.get(f"PENGUINMAILS_{job.upper()}_EXPORTER") or address
        for job, address in DEV_EXPORTERS.items()
    }


# -- the dev stack's target files


def _owned(groups: Any, stack: str) -> bool:
    """A file is ours when every group in it is labelled with our stack (we never write other labels)."""
    return isinstance(groups, list) and all(
        isinstance(g, dict) and (g.get("labels") or {}).get("stack") == stack for g in groups
    )


def _path(directory: Path, job: str, stack: str) -> Path:
    return directory / job / f"{stack}.json"


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise TargetsError(f"ScrapeTargets: cannot read {path}: {exc}") from None


def _write(path: Path, groups: list[dict[str, Any]]) -> None:
    """Atomically (Prometheus re-reads the file any time): a temp file in the same folder, renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".", suffix=".tmp", delete=False) as tmp:
        json.dump(groups, tmp, indent=1, sort_keys=True)
        tmp.write("\n")
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, path)


class ScrapeTargetsProvider(dynamic.ResourceProvider):
    def configure(self, req: dynamic.ConfigureRequest) -> None:
        self.settings = ProviderSettings.from_request(req)

    def _directory(self) -> Path:
        settings = getattr(self, "settings", ProviderSettings())
        directory = settings.dev_env(ENV_TARGETS_DIR)
        if not directory:
            raise TargetsError(
                "ScrapeTargets: PENGUINMAILS_PROMETHEUS_TARGETS_DIR is not set (a dev stack writes its "
                "targets for the devenv Prometheus): run `source tools/env.sh` after `make devenv-start`"
            )
        return Path(directory)

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures = []
        unknown = sorted(set(news.get("jobs") or {}) - set(JOBS))
        if unknown:
            failures.append(dynamic.CheckFailure("jobs", f"unknown exporter jobs: {', '.join(unknown)}"))
        for job, groups in (news.get("jobs") or {}).items():
            if not _owned(groups, news.get("stack")):
                failures.append(
                    dynamic.CheckFailure("jobs", f"{job}: every group must carry stack={news.get('stack')}")
                )
        return dynamic.CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = [k for k in ("stack", "jobs") if olds.get(k) != news.get(k)]
        return dynamic.DiffResult(changes=bool(changed), replaces=[k for k in changed if k == "stack"])

    def _apply(self, props: dict[str, Any], olds: dict[str, Any] | None = None) -> dict[str, Any]:
        directory, stack = self._directory(), props["stack"]
        wanted = props.get("jobs") or {}
        for job in JOBS:
            path = _path(directory, job, stack)
            present = _read(path)
            if present is not None and not _owned(present, stack):
                raise TargetsError(
                    f"ScrapeTargets[{stack}]: {path} exists and is not this stack's (a group without "
                    f"stack={stack}); move it away or rename the stack"
                )
            if job in wanted:
                if present != wanted[job]:
                    _write(path, wanted[job])
            elif present is not None:
                path.unlink()
        return {**props, "directory": str(directory)}

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        return dynamic.CreateResult(id_=f"targets-{props['stack']}", outs=self._apply(props))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(outs=self._apply(news, olds))

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        """The files as they are: an edited or removed file shows as drift and is rewritten by `up`."""
        directory = Path(props.get("directory") or self._directory())
        stack = props["stack"]
        jobs = {}
        for job in JOBS:
            present = _read(_path(directory, job, stack))
            if present is not None:
                jobs[job] = present
        return dynamic.ReadResult(id_=id_, outs={**props, "jobs": jobs})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        directory = Path(props.get("directory") or self._directory())
        for job in JOBS:
            path = _path(directory, job, props["stack"])
            present = _read(path)
            if present is not None and _owned(present, props["stack"]):
                path.unlink()


class ScrapeTargets(dynamic.Resource, module="monitoring", name="ScrapeTargets"):
    """One stack's target files in the devenv Prometheus's ``file_sd`` folders (dev stacks)."""

    jobs: pulumi.Output[dict]

    def __init__(
        self, name: str, stack: str, jobs: pulumi.Input[dict], opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(
            ScrapeTargetsProvider(), name, {"stack": stack, "jobs": jobs, "directory": None}, opts
        )
