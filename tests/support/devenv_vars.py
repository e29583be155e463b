"""What ``source tools/env.sh`` puts in a shell, as fixed stand-ins, and stack settings as providers see them.

Unit tests set these variables to prove which stacks read them (dev) and which never do (staging,
production); the values are recognisable so an assertion can tell where a setting came from.
"""

from __future__ import annotations

import json
from typing import Any

from modules.providers import ProviderSettings

DEVENV_VARS = {
    "PENGUINMAILS_HOSTWINDS_ENDPOINT": "http://127.0.0.1:8930/cloud/api.php",
    "PENGUINMAILS_HOSTWINDS_API_KEY": "devenv-hostwinds-key",
    "PENGUINMAILS_FLEET_SSH_PRIVATE_KEY": "/devenv/hostwinds/operator_ed25519",
    "PENGUINMAILS_POSTGRES_HOST": "127.0.0.1",
    "PENGUINMAILS_POSTGRES_PORT": "5433",
    "PENGUINMAILS_POSTGRES_ADMIN_USER": "postgres",
    "PENGUINMAILS_POSTGRES_ADMIN_PASSWORD": "devenv-postgres-pw",
    "PENGUINMAILS_REDIS_HOST": "127.0.0.1",
    "PENGUINMAILS_REDIS_PORT": "6390",
    "PENGUINMAILS_REDIS_ADMIN_PASSWORD": "devenv-redis-pw",
    "PENGUINMAILS_DNS_SERVER": "127.0.0.1",
    "PENGUINMAILS_DNS_PORT": "5353",
    "PENGUINMAILS_DNS_STATS_PORT": "8053",
    "PENGUINMAILS_TSIG_KEY_NAME": "penguinmails-dev",
    "PENGUINMAILS_TSIG_SECRET": "ZGV2ZW52LXRzaWc=",
    # Not exported by the devenv, but dev-only overrides of the same kind.
    "PENGUINMAILS_POSTGRES_OLTP_ADMIN_PASSWORD": "devenv-oltp-pw",
    "PENGUINMAILS_ROUTE53_ENDPOINT": "http://127.0.0.1:5999",
}


def stack_settings(environment: str | None = None, **config: Any) -> ProviderSettings:
    """Provider settings of a stack: ``config`` keys without the namespace; objects sent as JSON text."""
    raw: dict[str, Any] = {}
    if environment is not None:
        raw["penguinmails:environment"] = environment
    for key, value in config.items():
        raw[f"penguinmails:{key}"] = value if isinstance(value, str) else json.dumps(value)
    return ProviderSettings(raw)
