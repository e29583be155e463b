"""The penguinmails-policy language host runs a pack with `python -m pulumi.policy` and streams its output."""

from __future__ import annotations

import os

import pytest
from pulumi.runtime.proto import language_pb2

from modules.policy.langhost import PolicyLanguageHost


class _Context:
    def __init__(self):
        self.callbacks = []

    def add_callback(self, callback):
        self.callbacks.append(callback)

    def abort(self, code, message):
        raise RuntimeError(f"{code}: {message}")


def test_run_plugin_streams_stdout_stderr_and_the_exit_code(tmp_path):
    (tmp_path / "__main__.py").write_text(
        "import os, sys\nprint('port-line', sys.argv[1:2])\nprint('log', os.environ['PM_TEST'], file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    request = language_pb2.RunPluginRequest(
        args=["127.0.0.1:1"],
        env=[f"PATH={os.environ['PATH']}", "PM_TEST=from-engine"],
        kind="analyzer",
        info=language_pb2.ProgramInfo(program_directory=str(tmp_path), root_directory=str(tmp_path)),
    )
    context = _Context()
    replies = list(PolicyLanguageHost().RunPlugin(request, context))
    stdout = b"".join(r.stdout for r in replies if r.WhichOneof("output") == "stdout")
    stderr = b"".join(r.stderr for r in replies if r.WhichOneof("output") == "stderr")
    assert b"port-line" in stdout and b"from-engine" in stderr
    # pulumi.policy reports a failing pack as exit 1 after logging it; the host passes the code on.
    assert replies[-1].WhichOneof("output") == "exitcode" and replies[-1].exitcode != 0
    assert context.callbacks, "the engine's cancel must stop the pack"


def test_only_analyzers_are_run():
    with pytest.raises(RuntimeError, match="runs policy packs only"):
        list(PolicyLanguageHost().RunPlugin(language_pb2.RunPluginRequest(kind="resource"), _Context()))
