#!/usr/bin/python3
"""Count Postfix's SMTP deliveries per sending IP and status for node exporter's textfile collector.

Writes ``penguinmails_smtp_deliveries_total{sending_ip,status}`` (status: sent, deferred, bounced). The
postfix exporter cannot: it has no bounce counter and no sending IP, and it does not parse the per-IP
transports' lines (``postfix/smtp-<name>/smtp[pid]: ...``). Each sending IP has its own transport whose
syslog name says which one (the postfix role's master.cf), so ``--transport <name>=<address>`` maps a
line to its IP; the plain ``smtp`` transport (no bound address) counts as ``default``.

Run by cron: every run reads the log from where the last one stopped (offset and inode in the state
file, with the counts), so the counters only grow; a rotated or truncated log is read from its start.
Only python3's standard library: it runs on the mail host.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

STATUSES = ("sent", "deferred", "bounced")
DEFAULT = "default"
UNKNOWN = "unknown"
METRIC = "penguinmails_smtp_deliveries_total"
# Postfix prefixes the process name with syslog_name: the smtp client of transport smtp-main logs as
# postfix/smtp-main/smtp[pid], the plain smtp transport's as postfix/smtp[pid].
_LINE = re.compile(
    r" postfix/(?:smtp-(?P<name>[A-Za-z0-9_.-]+)/)?smtp\[\d+\]: [0-9A-Za-z]+: to=<.*?status=(?P<status>\w+)"
)


def classify(line: str, transports: dict[str, str]) -> tuple[str, str] | None:
    """(sending IP, status) of one smtp delivery line, or None when the line is no such delivery."""
    found = _LINE.search(line)
    if not found or found["status"] not in STATUSES:
        return None
    name = found["name"]
    return (DEFAULT if name is None else transports.get(name, UNKNOWN)), found["status"]


def count(lines, transports: dict[str, str], counts: dict[str, int]) -> dict[str, int]:
    """Add the deliveries in ``lines`` to ``counts`` (keys ``<ip> <status>``) and return it."""
    for line in lines:
        found = classify(line, transports)
        if found:
            key = f"{found[0]} {found[1]}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def read_new(log: Path, state: dict) -> tuple[list[str], dict]:
    """The complete lines written since ``state``'s offset, and the new offset and inode."""
    try:
        info = log.stat()
    except FileNotFoundError:
        return [], state
    offset = state.get("offset", 0)
    if state.get("inode") != info.st_ino or info.st_size < offset:
        offset = 0  # rotated or truncated: the new file from its start
    with log.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next run
    lines = data[:end].decode("utf-8", errors="replace").splitlines()
    return lines, {**state, "inode": info.st_ino, "offset": offset + end}


def render(counts: dict[str, int], transports: dict[str, str]) -> str:
    """Exposition text: every configured IP (and the default transport) with all statuses, zero or not,
    so a first bounce is an increase Prometheus sees rather than a new series."""
    keys = {f"{ip} {status}" for ip in [DEFAULT, *transports.values()] for status in STATUSES}
    keys |= set(counts)
    lines = [
        f"# HELP {METRIC} Postfix SMTP deliveries by sending IP and status, from the mail log.",
        f"# TYPE {METRIC} counter",
    ]
    for key in sorted(keys):
        ip, status = key.split(" ", 1)
        lines.append(f'{METRIC}{{sending_ip="{ip}",status="{status}"}} {counts.get(key, 0)}')
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str, mode: int) -> None:
    """Replace ``path`` by a rename, so a reader never sees half of it."""
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _transport(text: str) -> tuple[str, str]:
    name, sep, address = text.partition("=")
    if not sep or not name or not address:
        raise argparse.ArgumentTypeError(f"--transport {text!r}: expected <name>=<address>")
    return name, address


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, required=True, help="Postfix's mail log (maillog_file)")
    parser.add_argument("--state", type=Path, required=True, help="offset and counts between runs")
    parser.add_argument("--output", type=Path, required=True, help="the .prom file to write")
    parser.add_argument("--transport", type=_transport, action="append", default=[], help="name=address")
    args = parser.parse_args(argv)
    transports = dict(args.transport)
    try:
        state = json.loads(args.state.read_text())
    except FileNotFoundError:
        state = {}
    except ValueError:
        print(f"smtp_deliveries: {args.state} is not JSON; counting from the log's start", file=sys.stderr)
        state = {}
    lines, state = read_new(args.log, state)
    state["counts"] = count(lines, transports, dict(state.get("counts", {})))
    _write(args.output, render(state["counts"], transports), 0o644)
    _write(args.state, json.dumps(state), 0o600)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
