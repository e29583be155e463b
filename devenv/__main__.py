"""`python -m devenv start|stop|status|env [service …]`: idempotent control of the local services."""

from __future__ import annotations

import shlex
import sys

from devenv.registry import environment, services
from modules.errors import ToolkitError


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"start", "stop", "status", "env"}:
        print("usage: python -m devenv start|stop|status|env [service …]", file=sys.stderr)
        return 2
    action, names = argv[0], argv[1:]
    if action == "env":
        for key, value in sorted(environment().items()):
            print(f"export {key}={shlex.quote(value)}")
        return 0
    chosen = services(names)
    if action == "stop":
        chosen = list(reversed(chosen))
    failed = False
    for service in chosen:
        try:
            status = getattr(service, action)()
        except ToolkitError as exc:
            print(f"{service.name:<12} FAILED  {exc}", file=sys.stderr)
            failed = True
            continue
        state = "running" if status.running else "stopped"
        print(f"{status.name:<12} {state:<8} {status.address:<22} {status.detail}")
        failed |= action in {"start", "status"} and not status.running
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
