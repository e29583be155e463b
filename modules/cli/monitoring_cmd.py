"""`penguinmails monitoring`: is every component of a stack scraped and covered by an alert rule?

``exporter`` serves the stack's own metrics (queue depth, DNSBL listings, quarantines) for Prometheus.

``coverage`` reads the stack's state (``pulumi stack export``) for its components and asks the Prometheus
that watches it (dev: the devenv's, ``PENGUINMAILS_PROMETHEUS_URL``; otherwise ``monitoring.prometheus_url``
or ``--prometheus-url``, e.g. through an SSH tunnel) for live targets and loaded rules.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import typer

from modules.cli.console import console
from modules.cli.pulumi_json import pulumi_json
from modules.errors import ToolkitError
from modules.monitoring.coverage import components_from_state, coverage
from modules.monitoring.exporter import DEFAULT_LISTEN, serve

app = typer.Typer(no_args_is_help=True, help=__doc__)

STACK = typer.Option("dev", "--stack", "-s", help="Stack to check.")
CWD = typer.Option(Path("."), "--cwd", help="Folder holding Pulumi.yaml.")


def _prometheus_url(stack: str, cwd: Path, given: str | None) -> str:
    if given:
        return given
    config = pulumi_json(["config", "--json", "--stack", stack], f"the config of {stack!r}", cwd, {})
    environment = str((config.get("penguinmails:environment") or {}).get("value") or "dev")
    section = (config.get("penguinmails:monitoring") or {}).get("value")
    if isinstance(section, str):
        section = json.loads(section or "{}")
    url = (section or {}).get("prometheus_url")
    if not url and environment == "dev":  # only a dev stack reads the devenv's variables
        url = os.environ.get("PENGUINMAILS_PROMETHEUS_URL")
    if not url:
        raise ToolkitError(
            f"stack {stack!r}: no Prometheus to ask; set monitoring.prometheus_url or pass --prometheus-url"
        )
    return url


@app.command("coverage")
def coverage_command(
    stack: str = STACK,
    cwd: Path = CWD,
    prometheus_url: str | None = typer.Option(None, "--prometheus-url", help="Prometheus base URL."),
    as_json: bool = typer.Option(False, "--json"),
    wait: float = typer.Option(
        0, "--wait", min=0, max=900, help="Seconds to wait for gaps to close (new targets after an up)."
    ),
) -> None:
    """Every component from the stack's state with its scrape target and alert rules; exit 1 on a gap."""
    url = _prometheus_url(stack, cwd, prometheus_url)
    state = pulumi_json(["stack", "export", "--stack", stack], f"the state of {stack!r}", cwd, {})
    components = components_from_state((state.get("deployment") or {}).get("resources") or [])
    if not components:
        raise ToolkitError(f"stack {stack!r} has no resources: run `pulumi up --stack {stack}` first")
    deadline = time.monotonic() + wait
    with console.status("asking Prometheus…") as status:
        while True:
            rows = coverage(components, stack, url)
            gaps = [row for row in rows if not row.ok]
            if not gaps or time.monotonic() >= deadline:
                break
            status.update(f"{len(gaps)} gap(s) left, e.g. {gaps[0].component} {gaps[0].job}: {gaps[0].gap()}")
            time.sleep(2)
    covered = sum(row.ok for row in rows)
    share = 100.0 * covered / len(rows)
    if as_json:
        print(
            json.dumps(
                {
                    "stack": stack,
                    "coverage_percent": round(share, 1),
                    "rows": [{**row.__dict__, "ok": row.ok, "gap": row.gap()} for row in rows],
                },
                indent=2,
            )
        )
    else:
        console.print(f"{'component':<22} {'job':<13} {'state':<17} {'rules':>5}  target")
        for row in rows:
            state_text = "ok" if row.ok else row.gap()
            console.print(
                f"{row.component:<22} {row.job:<13} {state_text:<17} {len(row.rules):>5}  "
                f"{', '.join(row.targets) or '-'}",
                soft_wrap=True,
            )
        console.print(f"monitoring coverage of {stack}: {covered}/{len(rows)} ({share:.0f}%)")
    if covered < len(rows):
        raise typer.Exit(1)


@app.command("exporter")
def exporter(
    config: Path | None = typer.Option(None, "--config", help="The exporter's JSON config (mode 0600)."),
    listen: str = typer.Option(DEFAULT_LISTEN, "--listen", help="host:port to serve /metrics on."),
    routes_listen: str | None = typer.Option(
        None,
        "--routes-listen",
        help="host:port to serve the hosts' routes endpoint on (needs routes_token in the config).",
    ),
    stack: str | None = typer.Option(
        None, "--stack", "-s", help="Install this dev stack's config in the devenv exporter (with --install)."
    ),
    install: bool = typer.Option(
        False, "--install", help="Write the config and (re)start the devenv exporter."
    ),
    cwd: Path = CWD,
) -> None:
    """Serve /metrics: queue depth at scrape time, DNSBL results from the background checks.

    ``--stack S --install`` (what ``make up`` runs) takes the stack's ``monitoring_exporter_config`` output
    and runs the devenv's exporter on it; only a dev stack may do that.
    """
    if install:
        if stack is None or config is not None:
            raise ToolkitError("exporter --install: name the stack with --stack (and no --config)")
        _install(stack, cwd)
        return
    if config is None:
        raise ToolkitError("exporter: give --config PATH, or --stack S --install for the dev stack")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(config, listen, routes_listen)


def _install(stack: str, cwd: Path) -> None:
    from devenv.penguinmails_exporter import PenguinmailsExporterService

    settings = pulumi_json(["config", "--json", "--stack", stack], f"the config of {stack!r}", cwd, {})
    environment = str((settings.get("penguinmails:environment") or {}).get("value") or "dev")
    if environment != "dev":  # nothing of a real stack runs in the devenv
        console.print(f"stack {stack} is {environment}: its exporter runs on its monitoring host, not here")
        return
    outputs = pulumi_json(
        ["stack", "output", "--json", "--show-secrets", "--stack", stack],
        f"the outputs of {stack!r}",
        cwd,
        {},
    )
    found = outputs.get("monitoring_exporter_config")
    if not found:
        raise ToolkitError(f"stack {stack!r} has no monitoring_exporter_config output: run `make up` first")
    service = PenguinmailsExporterService()
    changed = service.install(json.dumps(found, indent=1, sort_keys=True) + "\n")
    status = service.status()
    console.print(
        f"penguinmails exporter for {stack}: {'started' if changed else 'unchanged'} on {status.address}"
    )
