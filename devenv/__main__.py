"""`python -m devenv start|stop|status|env [service …]`: idempotent control of the local services."""

from __future__ import annotations

import shlex
import sys

from devenv.registry import control, environment


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"start", "stop", "status", "env"}:
        print("usage: python -m devenv start|stop|status|env [service …]", file=sys.stderr)
        return 2
    action, names = argv[0], argv[1:]
    if action == "env":
        for key, value in sorted(environment().items()):
            print(f"export {key}={shlex.quote(value)}")
        return 0
    statuses, failed = control(action, names)
    for status in statuses:
        state = "running" if status.running else ("idle" if status.idle else "stopped")
        print(f"{status.name:<21} {state:<8} {status.address:<22} {status.detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
