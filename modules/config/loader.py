"""Read the stack configuration, validate it, and say exactly what is wrong.

The Pulumi program calls :func:`load_stack_config` first thing; the CLI's ``config validate`` reads a
``Pulumi.<stack>.yaml`` file through :func:`load_stack_file`. Both end in :func:`validate_config`, which
collects every problem and raises one :class:`ConfigError` whose lines name the full key
(``penguinmails:fleet.nodes``) and the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError as PydanticValidationError

from modules.config import model
from modules.config.model import StackConfig
from modules.config.reputation import is_query_key_secret
from modules.errors import ConfigError

NAMESPACE = "penguinmails"

# Secret config values: read only as Pulumi secrets, never part of the model, and refused in plain text.
SECRET_KEYS = frozenset(model.SECRET_KEYS)
# Top-level config keys, as spelt in the stack file (``secretsFromEnv`` is an alias).
SECTIONS = frozenset(field.alias or name for name, field in StackConfig.model_fields.items())


def _key(loc: Iterable[Any]) -> str:
    text = NAMESPACE + ":"
    first = True
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += part if first else f".{part}"
        first = False
    return text.rstrip(":") if first else text


def _describe(error: Mapping[str, Any]) -> list[str]:
    # "[key]" marks a mapping key that failed (secretsFromEnv): the key before it is the one to name.
    loc = [p for p in error.get("loc", ()) if p not in ("", "__root__", "[key]")]
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        return [f"{_key(loc)}: unknown key (check the spelling; see modules/config/model.py)"]
    if error.get("type") == "missing":
        return [f"{_key(loc)}: required key is missing"]
    if not loc:
        # Cross-section checks report several reasons at once, each already naming its key.
        return [f"{NAMESPACE}:{reason.strip()}" for reason in message.split("; ")]
    shown = error.get("input")
    quiet = isinstance(shown, dict | list) or shown is None or "[key]" in error.get("loc", ())
    got = "" if quiet else f" (got {shown!r})"
    return [f"{_key(loc)}: {message}{got}"]


def validate_config(
    values: Mapping[str, Any], secret_keys: Iterable[str] = (), stack: str = "stack"
) -> StackConfig:
    """Validate plain config values (keys without the namespace) and return the typed model.

    ``secret_keys`` names the keys that Pulumi holds as secrets; a known secret key set in plain text is
    an error, because it would sit unencrypted in ``Pulumi.<stack>.yaml``.
    """
    reasons: list[str] = []
    secret_keys = set(secret_keys)
    model_input: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECRET_KEYS or is_query_key_secret(key):  # dnsblKey<Name>: reputation.query_keys
            if key not in secret_keys:
                reasons.append(
                    f"{NAMESPACE}:{key}: must be a secret; set it with "
                    f"`pulumi config set --secret {key} …` (the plain value was not printed)"
                )
            continue
        if key not in SECTIONS:
            known = ", ".join(sorted(SECTIONS | SECRET_KEYS))
            reasons.append(f"{NAMESPACE}:{key}: unknown key (known keys: {known})")
            continue
        model_input[key] = value
    model: StackConfig | None = None
    try:
        model = StackConfig.model_validate(model_input)
    except PydanticValidationError as exc:
        for error in exc.errors(include_url=False):
            reasons.extend(_describe(error))
    if reasons:
        raise ConfigError(f"invalid configuration for stack {stack!r}", reasons)
    assert model is not None
    return model


def _strip_namespace(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Keep this project's keys (``penguinmails:x`` → ``x``); other namespaces belong to other tools."""
    values: dict[str, Any] = {}
    secrets: list[str] = []
    for full_key, value in raw.items():
        namespace, _, key = full_key.partition(":")
        if namespace != NAMESPACE or not key:
            continue
        if isinstance(value, dict) and set(value) == {"secure"}:
            secrets.append(key)
        values[key] = value
    return values, secrets


def load_stack_file(path: Path) -> StackConfig:
    """Validate a ``Pulumi.<stack>.yaml`` file without the engine (for the CLI and for CI checks)."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}", [str(exc)]) from None
    raw = document.get("config") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"cannot read {path}", ["'config' must be a mapping of keys to values"])
    values, secrets = _strip_namespace(raw)
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    return validate_config(values, secrets, stack=stack)


def load_stack_config() -> StackConfig:
    """Validate the running Pulumi program's config (all keys of the namespace, secrets excluded)."""
    import json

    import pulumi
    from pulumi.runtime import config as runtime_config

    raw = {k: v for k, v in runtime_config.get_config_env().items()}
    values: dict[str, Any] = {}
    for full_key, text in raw.items():
        namespace, _, key = full_key.partition(":")
        if namespace != NAMESPACE:
            continue
        try:
            values[key] = json.loads(text) if key not in SECRET_KEYS else text
        except (TypeError, json.JSONDecodeError):
            values[key] = text
    secret_keys = [k.partition(":")[2] for k in runtime_config.get_config_secret_keys_env()]
    return validate_config(values, secret_keys, stack=pulumi.get_stack())
