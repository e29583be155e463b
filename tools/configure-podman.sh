#!/usr/bin/env bash
# Make podman usable on these machines (measured on Debian 12, podman 4.3, cgroups v1, no systemd):
#   - crun fails with "cgroups in hybrid mode not supported"      -> runtime = "runc" under [engine]
#   - the default nofile ulimit fails with "setrlimit ... EPERM"  -> default_ulimits = [] under [containers]
# Idempotent: only the two keys are set; every other line of an existing containers.conf is kept.
set -euo pipefail

CONF="${PODMAN_CONTAINERS_CONF:-/etc/containers/containers.conf}"
mkdir -p "$(dirname "$CONF")"
touch "$CONF"

python3 - "$CONF" <<'PY'
import re
import sys
from pathlib import Path

path = Path(sys.argv[1])
wanted = {"engine": ("runtime", 'runtime = "runc"'), "containers": ("default_ulimits", "default_ulimits = []")}
lines = path.read_text().splitlines()
header = re.compile(r"^\s*\[([A-Za-z0-9_.-]+)\]\s*(#.*)?$")


def section_bounds(name):
    """(index of the header, index where the section ends) or None."""
    start = None
    for i, line in enumerate(lines):
        m = header.match(line)
        if m and start is None and m.group(1) == name:
            start = i
        elif m and start is not None:
            return start, i
    return (start, len(lines)) if start is not None else None


changed = False
for section, (key, setting) in wanted.items():
    bounds = section_bounds(section)
    if bounds is None:
        if lines and lines[-1].strip():
            lines.append("")
        lines += [f"[{section}]", setting]
        changed = True
        continue
    start, end = bounds
    key_re = re.compile(rf"^\s*{key}\s*=")
    found = [i for i in range(start + 1, end) if key_re.match(lines[i])]
    if not found:
        lines.insert(start + 1, setting)
        changed = True
        continue
    i = found[0]
    # A multi-line array value (key = [ ... ]) is replaced whole.
    j = i
    if "[" in lines[i] and "]" not in lines[i].split("=", 1)[1]:
        while j + 1 < end and "]" not in lines[j]:
            j += 1
    if lines[i : j + 1] != [setting]:
        lines[i : j + 1] = [setting]
        changed = True

if changed:
    path.write_text("\n".join(lines) + "\n")
    print(f"configure-podman: wrote {path}")
PY
