"""``python -m modules.monitoring``: the penguinmails exporter alone, as the monitoring VPS runs it.

The host gets only the exporter's libraries (the penguinmails_exporter role's wheelhouse), not the CLI's
(typer, Pulumi, Ansible), so this entry point imports nothing but the exporter.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from modules.errors import ToolkitError
from modules.monitoring.exporter import DEFAULT_LISTEN, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modules.monitoring", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the exporter's config file (mode 0600)")
    parser.add_argument("--listen", default=DEFAULT_LISTEN, help="host:port of /metrics")
    parser.add_argument("--routes-listen", default=None, help="host:port of the hosts' routes endpoint")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve(args.config, args.listen, args.routes_listen)
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
