"""The CLI's exit code is the command's: `typer.Exit(n)` (a check that found gaps) must reach the shell."""

from __future__ import annotations

import pytest
import typer

from modules.cli import main
from modules.errors import ToolkitError


def _app(action) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def check() -> None:
        action()

    @app.command()
    def other() -> None:
        pass

    return app


def _raise(exc):
    def action():
        raise exc

    return action


@pytest.mark.parametrize(
    ("action", "code"),
    [(_raise(typer.Exit(1)), 1), (_raise(typer.Exit(3)), 3), (lambda: None, None)],
)
def test_exit_codes_reach_the_shell(monkeypatch, action, code) -> None:
    monkeypatch.setattr(main, "app", _app(action))
    monkeypatch.setattr("sys.argv", ["penguinmails", "check"])
    if code is None:
        main.run()
        return
    with pytest.raises(SystemExit) as done:
        main.run()
    assert done.value.code == code


def test_a_toolkit_error_is_one_line_and_its_code(monkeypatch, capsys) -> None:
    monkeypatch.setattr(main, "app", _app(_raise(ToolkitError("stack 'x' has no outputs"))))
    monkeypatch.setattr("sys.argv", ["penguinmails", "check"])
    with pytest.raises(SystemExit) as done:
        main.run()
    assert done.value.code == ToolkitError("x").exit_code
    assert "stack 'x' has no outputs" in capsys.readouterr().err
