"""Helpers every dynamic provider shares: reading stack config in ``configure()`` and credentials.

Credentials never travel as resource inputs, and where a provider connects to, and with which secret,
depends on the stack's ``environment``:

- a **dev** stack takes the devenv's variables first (``tools/env.sh`` exports ``PENGUINMAILS_*``, the
  addresses and admin credentials of the local services), then its config and secret config;
- a **staging or production** stack never reads a devenv variable: endpoints come from its config only,
  secrets from its secret config, else from the CI variable that ``secretsFromEnv`` names for that key.
  A shell that sourced ``tools/env.sh`` therefore cannot point it at the local services.
"""

from __future__ import annotations

import json
import os
from typing import Any, TypeVar

from pulumi.dynamic import ConfigureRequest
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from modules.config.loader import NAMESPACE
from modules.config.model import DEVENV_PREFIX, SecretsFromEnv
from modules.errors import ConfigError

T = TypeVar("T")
DEV = "dev"
_SECRETS_FROM_ENV = TypeAdapter(SecretsFromEnv)


def _decoded(value: Any) -> Any:
    """A JSON object or list given as text (config values, CI variables) as data; anything else as is."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


class ProviderSettings:
    """The stack config a provider saw in ``configure()``, with JSON objects decoded.

    Without config (a provider called directly, tests, benchmarks) the stack counts as ``dev``.
    """

    def __init__(self, raw: dict[str, Any] | None = None):
        self._raw = raw or {}

    @classmethod
    def from_request(cls, req: ConfigureRequest) -> ProviderSettings:
        return cls(getattr(req.config, "_props", {}) or {})

    def get(self, key: str, default: Any = None) -> Any:
        return _decoded(self._raw.get(f"{NAMESPACE}:{key}", default))

    def section(self, key: str) -> dict[str, Any]:
        value = self.get(key) or {}
        return value if isinstance(value, dict) else {}

    @property
    def environment(self) -> str:
        """``penguinmails:environment`` (``dev`` when unset, as in the model)."""
        value = self.get("environment")
        return str(value).strip().strip('"') if value else DEV

    @property
    def is_dev(self) -> bool:
        """Only a dev stack reads the devenv's variables; anything else (even a typo) does not."""
        return self.environment == DEV

    @property
    def secrets_from_env(self) -> dict[str, str]:
        """``penguinmails:secretsFromEnv`` validated like the program validates it: secret key → CI variable."""
        raw = self.get("secretsFromEnv") or {}
        try:
            return dict(_SECRETS_FROM_ENV.validate_python(raw))
        except PydanticValidationError as exc:
            reasons = []
            for error in exc.errors(include_url=False):
                where = ".".join(str(p) for p in error["loc"] if p != "[key]")
                message = str(error["msg"]).removeprefix("Value error, ")
                reasons.append(f"{NAMESPACE}:secretsFromEnv{'.' + where if where else ''}: {message}")
            raise ConfigError("invalid configuration", reasons) from None

    def dev_env(self, env_var: str) -> str | None:
        """The devenv variable ``env_var`` on a dev stack; always None on staging and production."""
        return (os.environ.get(env_var) or None) if self.is_dev else None

    def ci_secret(self, config_key: str) -> Any:
        """The CI variable ``secretsFromEnv`` names for ``config_key`` (staging/production), decoded like
        config; None on a dev stack, when nothing is named, or when the variable is unset."""
        if self.is_dev:
            return None
        name = self.secrets_from_env.get(config_key)
        if not name or name.upper().startswith(DEVENV_PREFIX):  # validated already; never a devenv name
            return None
        return _decoded(os.environ.get(name)) or None

    def credential(self, env_var: str, config_key: str) -> Any:
        """A secret: dev: the devenv variable, else the secret config value; staging/production: the secret
        config value, else the CI variable named in ``secretsFromEnv`` (never ``env_var``). None when unset.

        JSON objects (a secret per tier or per key name) arrive decoded, as from :meth:`get`.
        """
        if self.is_dev:
            return self.dev_env(env_var) or self.get(config_key) or None
        return self.get(config_key) or self.ci_secret(config_key) or None

    def endpoint(self, env_var: str, configured: T) -> str | T:
        """Where to connect: dev: the devenv variable, else ``configured``; staging/production: ``configured``."""
        return self.dev_env(env_var) or configured


def redact(text: str, *secrets: str | None) -> str:
    """Replace every given secret in ``text`` by ``***`` (for messages that may quote a server's answer)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
