"""The one rich console of the CLI: colour on a terminal, plain text otherwise."""

from __future__ import annotations

from rich.console import Console

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)
