"""The example pipelines under ci/: they parse, call only scripts, targets and options that exist, and the
shared scripts turn the preview's exit codes into the verdicts their comments promise."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import click
import pytest
import typer
import yaml

from modules.cli.main import app

REPO = Path(__file__).resolve().parents[3]
PIPELINES = [REPO / "ci/github/infrastructure.yml", REPO / "ci/gitlab/.gitlab-ci.yml"]
SCRIPTS = [REPO / "ci/preview.sh", REPO / "ci/drift-check.sh"]


def _commands(node) -> list[str]:
    """Every shell line of a pipeline (GitHub `run`, GitLab `script`/`before_script`/`after_script`)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("run", "script", "before_script", "after_script"):
                items = value if isinstance(value, list) else [value]
                found += [line for item in items for line in str(item).replace("\\\n", " ").splitlines()]
            else:
                found += _commands(value)
    elif isinstance(node, list):
        for item in node:
            found += _commands(item)
    return found


def _all_lines() -> list[str]:
    lines = [line for path in PIPELINES for line in _commands(yaml.safe_load(path.read_text()))]
    for script in SCRIPTS:
        text = script.read_text().replace("\\\n", " ")
        lines += [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return lines


def _words(line: str) -> list[str]:
    """A shell line's words up to the first redirect or operator, variables as placeholders."""
    line = re.sub(r"\$\{\{[^}]*\}\}|\$\{[^}]*\}|\$[A-Za-z_]+", "X", line.replace('"$@"', ""))
    words = []
    for word in shlex.split(line, comments=True):
        if word in (">", ">>", "||", "&&", "|", ";", "2>&1") or word.startswith(">"):
            break
        words.append(word)
    return words


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_pipeline_parses_and_has_a_preview_and_a_drift_job(path):
    data = yaml.safe_load(path.read_text())
    text = "\n".join(_commands(data))
    assert "ci/preview.sh" in text and "ci/drift-check.sh" in text
    assert "make bootstrap engine" in "\n".join(_commands(data))


def test_pipelines_call_only_existing_scripts_and_make_targets():
    targets = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.M))
    for line in _all_lines():
        for script in re.findall(r"\bci/[\w.-]+\.sh\b", line):
            assert os.access(REPO / script, os.X_OK), f"{script} is not an executable file ({line.strip()})"
        words = _words(line) if "make " in line else []
        if words[:1] == ["make"]:
            missing = [w for w in words[1:] if not w.startswith("-") and "=" not in w and w not in targets]
            assert not missing, f"make target(s) {missing} do not exist ({line.strip()})"


def test_every_penguinmails_call_parses_with_the_real_cli():
    root = typer.main.get_command(app)
    calls = [w for w in (_words(line) for line in _all_lines()) if w[:1] == ["penguinmails"]]
    assert len(calls) >= 4
    for words in calls:
        ctx = root.make_context("penguinmails", list(words[1:]), resilient_parsing=True)
        name, command, rest = root.resolve_command(ctx, list(words[1:]))
        try:
            command.make_context(name, rest, parent=ctx)
        except click.UsageError as exc:
            pytest.fail(f"`{' '.join(words)}`: {exc.format_message()}")


def _recorded(tmp_path: Path, steps: list[dict]) -> Path:
    path = tmp_path / "engine.json"
    path.write_text(json.dumps({"steps": steps, "changeSummary": {}, "diagnostics": []}))
    return path


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    return subprocess.run(
        [str(REPO / script), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_preview_script_passes_on_changes_and_writes_both_summaries(tmp_path):
    urn = "urn:pulumi:ci::penguinmails::penguinmails:platform:Platform$pulumi-python:dynamic/dns:RecordSet::a"
    change = {
        "op": "update",
        "urn": urn,
        "oldState": {"type": "pulumi-python:dynamic/dns:RecordSet", "inputs": {"ttl": 300}},
        "newState": {"type": "pulumi-python:dynamic/dns:RecordSet", "inputs": {"ttl": 600}},
    }
    out = tmp_path / "out"
    done = _run("ci/preview.sh", "ci", str(out), "--from-json", str(_recorded(tmp_path, [change])))
    assert done.returncode == 0, done.stderr
    assert (out / "exit-code").read_text().strip() == "2"
    assert "RecordSet" in (out / "preview.md").read_text()
    assert json.loads((out / "preview.json").read_text())["changes"][0]["changed"] == ["ttl"]


def test_preview_script_no_changes_and_errors(tmp_path):
    quiet = _run("ci/preview.sh", "ci", str(tmp_path / "a"), "--from-json", str(_recorded(tmp_path, [])))
    assert quiet.returncode == 0 and (tmp_path / "a/exit-code").read_text().strip() == "0"
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    failed = _run("ci/preview.sh", "ci", str(tmp_path / "b"), "--from-json", str(bad))
    assert failed.returncode == 1
    assert "the preview failed" in failed.stderr
    usage = _run("ci/drift-check.sh")
    assert usage.returncode != 0 and "usage" in usage.stderr
