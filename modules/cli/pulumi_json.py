"""Reading a stack through the ``pulumi`` CLI (on PATH after ``source tools/env.sh``) as JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from modules.errors import ToolkitError


def pulumi_json(args: list[str], what: str, cwd: Path | None = None, empty: Any = None) -> Any:
    """``pulumi <args>`` parsed as JSON (``empty`` when it prints nothing); a failure names ``what``."""
    try:
        done = subprocess.run(["pulumi", *args], capture_output=True, text=True, check=False, cwd=cwd)
    except FileNotFoundError:
        raise ToolkitError(
            f"cannot read {what}: the pulumi CLI is not on PATH (run `source tools/env.sh`)"
        ) from None
    if done.returncode != 0:
        raise ToolkitError(f"cannot read {what}: {done.stderr.strip() or done.stdout.strip()}")
    return json.loads(done.stdout) if done.stdout.strip() else empty
