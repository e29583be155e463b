"""One exception family for the toolkit.

Every error the toolkit raises on purpose derives from :class:`ToolkitError`, so the CLI can turn it into
a clean message and an exit code, and the Pulumi program can report it without a Python traceback.
"""

from __future__ import annotations


class ToolkitError(Exception):
    """Base of every deliberate toolkit error; ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code


class ValidationError(ToolkitError):
    """Input that fails validation: names the subject and lists every reason at once."""

    exit_code = 2

    def __init__(self, subject: str, reasons: list[str]):
        self.subject = subject
        self.reasons = list(reasons)
        lines = "\n".join(f"  - {reason}" for reason in self.reasons)
        count = len(self.reasons)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{subject}: {count} {noun}\n{lines}")


class ConfigError(ValidationError):
    """The stack configuration is invalid; raised before any resource is read or changed."""


class EngineError(ToolkitError):
    """The local Pulumi engine is missing or unusable."""


class DevenvError(ToolkitError):
    """A local embedded service could not be started, stopped or reached."""


class PartialFailure(ToolkitError):
    """A create or update failed after something real came to exist (an order was placed, a server built).

    The provider host records ``id`` and ``outs`` in the stack's state as a resource with an
    initialization error, so the next ``pulumi up`` updates that resource (and finds what was ordered)
    instead of creating, and paying for, a second one; ``destroy`` deletes it.
    """

    def __init__(self, message: str, id_: str, outs: dict):
        super().__init__(message)
        self.id = id_
        self.outs = dict(outs)
