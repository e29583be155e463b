"""Drive the real project through the Automation API in an isolated copy (own PULUMI_HOME and backend).

The project is mirrored into a temporary folder (Pulumi.yaml copied; stacks/ and .venv linked) so that a
test's ``Pulumi.<stack>.yaml`` never lands in the repository.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from modules.engine import REPO_ROOT, engine_env, pulumi_command


def mirror_project(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "Pulumi.yaml", target / "Pulumi.yaml")
    for name in ("stacks", ".venv"):
        link = target / name
        if not link.exists():
            link.symlink_to(REPO_ROOT / name)
    return target


def project_stack(
    tmp_path: Path,
    stack_name: str = "test",
    config: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> auto.Stack:
    """A fresh stack of the real project; ``config`` keys are plain names in the penguinmails namespace.

    Object values are set with ``--path`` semantics by passing JSON; secrets are set as Pulumi secrets.
    """
    project_dir = mirror_project(tmp_path / "project")
    # Scrape targets of a test stack go to a folder of its own, never into the devenv Prometheus (where a
    # test stack named like the dev stack would take over the dev stack's files); a test asks for it.
    targets = {"PENGUINMAILS_PROMETHEUS_TARGETS_DIR": str(tmp_path / "prometheus-targets")}
    env = {**os.environ, **engine_env(tmp_path / "state"), **targets, **(extra_env or {})}
    workspace = auto.LocalWorkspace(
        work_dir=str(project_dir),
        env_vars=env,
        pulumi_command=pulumi_command(),
        secrets_provider="passphrase",
    )
    stack = auto.Stack.create(stack_name, workspace)
    values: dict[str, auto.ConfigValue] = {}
    for key, value in (config or {}).items():
        text = value if isinstance(value, str) else json.dumps(value)
        values[f"penguinmails:{key}"] = auto.ConfigValue(text)
    for key, value in (secrets or {}).items():
        values[f"penguinmails:{key}"] = auto.ConfigValue(value, secret=True)
    if values:
        stack.set_all_config(values, path=False)
    return stack
