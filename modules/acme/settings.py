"""The acme role's variables from ``mail.acme``, following the dev-versus-real rules of ``modules.providers``.

A dev stack takes Pebble's directory and HTTPS CA, the narrow key and the DNS address the hosts reach
from the devenv's ``PENGUINMAILS_*`` variables (``tools/env.sh``), then its config. A staging or
production stack never reads them: config only, the secret from ``acmeTsigSecret`` or the CI variable
``secretsFromEnv.acmeTsigSecret`` names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modules.config.model import StackConfig
from modules.errors import ConfigError

SECRET_KEY = "acmeTsigSecret"  # noqa: S105 - a config key
ENV_DIRECTORY = "PENGUINMAILS_ACME_DIRECTORY"
ENV_SERVER_CA_FILE = "PENGUINMAILS_ACME_SERVER_CA_FILE"
ENV_KEY_NAME = "PENGUINMAILS_ACME_TSIG_KEY_NAME"
ENV_SECRET = "PENGUINMAILS_ACME_TSIG_SECRET"  # noqa: S105 - a variable name
ENV_DNS_SERVER = "PENGUINMAILS_ACME_DNS_SERVER"
ENV_DNS_PORT = "PENGUINMAILS_DNS_PORT"


def enabled(config: StackConfig) -> bool:
    """ACME runs for native hosts whose stack config has ``mail.acme`` (MailU keeps its own TLS)."""
    return config.mail.acme is not None and config.mail.flavor == "native"


def _dev_env(config: StackConfig, environ: Mapping[str, str], name: str) -> str | None:
    return (environ.get(name) or None) if config.environment == "dev" else None


def role_vars(config: StackConfig, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The acme role's non-secret variables (empty when ACME is off)."""
    if not enabled(config):
        return {}
    acme = config.mail.acme
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {
        "acme_enabled": True,
        "acme_directory_url": _dev_env(config, env, ENV_DIRECTORY) or acme.directory_url,
        "acme_contact_email": acme.contact_email,
        "acme_tsig_key_name": _dev_env(config, env, ENV_KEY_NAME) or acme.tsig_key_name,
        "acme_tsig_algorithm": acme.tsig_algorithm.upper(),
        "acme_dns_server": _dev_env(config, env, ENV_DNS_SERVER) or acme.dns_server,
        "acme_dns_port": int(_dev_env(config, env, ENV_DNS_PORT) or acme.dns_port),
        "acme_propagation_seconds": acme.propagation_seconds,
        "acme_renew_before_expiry_days": acme.renew_before_expiry_days,
        "acme_key_type": acme.key_type,
    }
    ca_file = _dev_env(config, env, ENV_SERVER_CA_FILE)
    if ca_file:
        try:
            values["acme_server_ca_certificate"] = Path(ca_file).read_text()
        except OSError as exc:
            raise ConfigError(
                "mail.acme",
                [f"{ENV_SERVER_CA_FILE}: cannot read {ca_file} ({exc.strerror}); is devenv pebble up?"],
            ) from None
    return values


def tsig_secret_source(
    config: StackConfig, environ: Mapping[str, str] | None = None
) -> tuple[str, str | None]:
    """Where the narrow key's secret comes from: ``("env", value)`` or ``("config", None)`` (read the secret
    config ``acmeTsigSecret``); staging/production fall back to the CI variable when the config has none."""
    env = os.environ if environ is None else environ
    value = _dev_env(config, env, ENV_SECRET)
    if value:
        return "env", value
    return "config", None


def ci_tsig_secret(config: StackConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The CI variable ``secretsFromEnv.acmeTsigSecret`` names (staging/production only)."""
    if config.environment == "dev":
        return None
    name = config.secrets_from_env.get(SECRET_KEY)
    env = os.environ if environ is None else environ
    return (env.get(name) or None) if name else None


def tsig_secret_output(config: StackConfig):
    """The narrow key's secret as a Pulumi secret Output; a clear error when it is nowhere."""
    import pulumi

    source, value = tsig_secret_source(config)
    if source == "env":
        return pulumi.Output.secret(value)
    configured = pulumi.Config("penguinmails").get_secret(SECRET_KEY)
    if configured is not None:
        return configured
    ci = ci_tsig_secret(config)
    if ci:
        return pulumi.Output.secret(ci)
    hint = (
        f"start the devenv (it exports {ENV_SECRET})"
        if config.environment == "dev"
        else (f"`pulumi config set --secret {SECRET_KEY}` or secretsFromEnv.{SECRET_KEY}")
    )
    raise ConfigError("mail.acme", [f"{SECRET_KEY}: the narrow ACME TSIG key's secret is not set ({hint})"])
