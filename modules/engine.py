"""Where the locally built Pulumi engine is, and the environment that keeps it offline.

Used by the CLI, the tests and the benchmarks to drive the real engine through the Automation API with
an isolated ``PULUMI_HOME`` and a ``file://`` backend.
"""

from __future__ import annotations

import os
from pathlib import Path

from modules.errors import EngineError

REPO_ROOT = Path(__file__).resolve().parents[1]
ENGINE_ROOT = REPO_ROOT / ".cache" / "engine" / "current"
PULUMI_VERSION = "v3.274.1"
DEV_PASSPHRASE = "penguinmails-dev-only"  # noqa: S105 - documented dev-only passphrase, see README

OFFLINE_ENV = {
    "PULUMI_SKIP_UPDATE_CHECK": "true",
    "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
    "PULUMI_DIY_BACKEND_DISABLE_CHECKPOINT_BACKUPS": "true",
    # The engine runs 4 x cores resource operations at once by default (8 here): too few for a fleet whose
    # nodes each wait on the API. The provider host has threads for this many.
    "PULUMI_PARALLEL": "64",
}


def engine_root() -> Path:
    """The folder whose ``bin/`` holds pulumi and its plugins; raises when the engine is not built."""
    root = Path(os.environ.get("PENGUINMAILS_ENGINE_ROOT", ENGINE_ROOT)).resolve()
    if not (root / "bin" / "pulumi").exists():
        raise EngineError(f"the Pulumi engine is not built in {root}/bin: run `make engine`")
    return root


def engine_env(state_dir: Path, passphrase: str = DEV_PASSPHRASE) -> dict[str, str]:
    """Variables for one isolated engine run: its own PULUMI_HOME and file backend under ``state_dir``."""
    home, backend = state_dir / "pulumi-home", state_dir / "backend"
    home.mkdir(parents=True, exist_ok=True)
    backend.mkdir(parents=True, exist_ok=True)
    venv_bin = str(REPO_ROOT / ".venv" / "bin")
    return {
        **OFFLINE_ENV,
        "PULUMI_HOME": str(home),
        "PULUMI_BACKEND_URL": f"file://{backend}",
        "PULUMI_CONFIG_PASSPHRASE": passphrase,
        "PATH": os.pathsep.join([str(engine_root() / "bin"), venv_bin, os.environ.get("PATH", "")]),
    }


def pulumi_command():
    """An Automation API command bound to the local engine (never ``PulumiCommand.install()``)."""
    from pulumi import automation as auto

    return auto.PulumiCommand(root=str(engine_root()), version=None, skip_version_check=False)
