"""The exporter runs on the monitoring host from a wheelhouse without pulumi: it must import without it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "pulumi" or name.startswith("pulumi."):
            raise ImportError("pulumi is not on the monitoring host: " + name)
sys.meta_path.insert(0, Block())
import modules.monitoring.__main__
from modules.monitoring.exporter import ExporterConfig
ExporterConfig.model_validate({"stack": "t", "retention_urls": {"content": "postgresql://r:p@db:5432/c"}})
print("imported")
"""


def test_the_exporter_and_its_config_need_no_pulumi():
    done = subprocess.run(
        [sys.executable, "-c", BLOCK], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr[-2000:]
