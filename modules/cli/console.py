"""The one rich console of the CLI: colour on a terminal, plain text otherwise."""

from __future__ import annotations

from rich.console import Console

console = Console(highlight=False)
# Errors are never wrapped: one message stays one line in a log or a pipeline, whatever the width.
errors = Console(stderr=True, highlight=False, soft_wrap=True)
