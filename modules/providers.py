"""Helpers every dynamic provider shares: reading stack config in ``configure()`` and credentials.

Credentials never travel as resource inputs. A provider reads them from the environment first (the dev
stack's ``devenv`` exports them; CI can inject them) and otherwise from the stack's secret config values,
which reach ``configure()`` decrypted.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pulumi.dynamic import ConfigureRequest

from modules.config.loader import NAMESPACE


class ProviderSettings:
    """The stack config a provider saw in ``configure()``, with JSON objects decoded."""

    def __init__(self, raw: dict[str, Any] | None = None):
        self._raw = raw or {}

    @classmethod
    def from_request(cls, req: ConfigureRequest) -> ProviderSettings:
        return cls(getattr(req.config, "_props", {}) or {})

    def get(self, key: str, default: Any = None) -> Any:
        value = self._raw.get(f"{NAMESPACE}:{key}", default)
        if isinstance(value, str) and value[:1] in "{[":
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value

    def section(self, key: str) -> dict[str, Any]:
        value = self.get(key) or {}
        return value if isinstance(value, dict) else {}

    def credential(self, env_var: str, config_key: str) -> str | None:
        """The environment wins (devenv, CI), then the secret config value; None when neither is set."""
        return os.environ.get(env_var) or self.get(config_key) or None


def redact(text: str, *secrets: str | None) -> str:
    """Replace every given secret in ``text`` by ``***`` (for messages that may quote a server's answer)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
