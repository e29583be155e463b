"""`penguinmails config validate`: a summary for good files, the key and reason and exit 2 for bad ones."""

from __future__ import annotations

import subprocess
import sys

from modules.engine import REPO_ROOT


def cli(*args, cwd=REPO_ROOT):
    return subprocess.run(
        [sys.executable, "-c", "from modules.cli.main import run; run()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_validate_dev_stack_prints_summary():
    result = cli("config", "validate", "--stack", "dev")
    assert result.returncode == 0, result.stderr
    assert "Pulumi.dev.yaml is valid" in result.stdout
    assert "environment  dev" in result.stdout
    assert "credentials  devenv variables (tools/env.sh) first" in result.stdout


def test_summary_names_the_ci_variables_of_a_production_stack():
    from modules.cli.config_cmd import credentials
    from modules.config.model import StackConfig

    config = StackConfig.model_validate(
        {
            "environment": "staging",
            "secretsFromEnv": {"tsigSecret": "CI_TSIG", "hostwindsApiKey": "CI_HW"},
        }
    )
    assert (
        credentials(config)
        == "config and secret config only; CI variables hostwindsApiKey=CI_HW, tsigSecret=CI_TSIG"
    )


def test_validate_bad_file_exits_2_naming_the_key(tmp_path):
    (tmp_path / "Pulumi.broken.yaml").write_text("config:\n  penguinmails:redis:\n    port: 0\n")
    result = cli("config", "validate", "--stack", "broken", "--project-dir", str(tmp_path))
    assert result.returncode == 2
    assert "penguinmails:redis.port" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_is_a_clear_error(tmp_path):
    result = cli("config", "validate", "--stack", "nope", "--project-dir", str(tmp_path))
    assert result.returncode == 2
    assert "cannot read" in result.stderr
