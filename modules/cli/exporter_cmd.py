"""`penguinmails monitoring exporter`: serve the queue and reputation metrics of one stack.

The config file is written by the stack (dev: ``<devenv>/monitoring/exporter-<stack>.json``); it must be
0600. The ``monitoring`` command group lives here until the coverage command joins it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from modules.monitoring.exporter import DEFAULT_LISTEN, serve

app = typer.Typer(no_args_is_help=True, help="Monitoring: the penguinmails exporter.")


@app.command("exporter")
def exporter(
    config: Path = typer.Option(..., "--config", help="The exporter's JSON config (mode 0600)."),
    listen: str = typer.Option(DEFAULT_LISTEN, "--listen", help="host:port to serve /metrics on."),
) -> None:
    """Serve /metrics: queue depth at scrape time, DNSBL results from the background checks."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(config, listen)
