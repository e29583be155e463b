"""pgBackRest for a ``mode: fleet`` tier: the postgresql role's backup variables, from ``postgres.backup``.

A fleet tier's primary backs up from its own host (the role installs pgBackRest, writes its settings and
cron entries, takes the first full backup), so the repository must be reachable from that host: a dev
stack's devenv s3 listens on loopback, so a dev stack takes ``PENGUINMAILS_FLEET_S3_ENDPOINT`` (an s3
instance on the podman gateway, see devenv/s3.py) or ``postgres.backup.endpoint``, never the loopback
``PENGUINMAILS_S3_ENDPOINT``. Without either a dev stack's fleet tier has no backup (a warning); any other
stack fails with the missing field named.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pulumi

from modules.config.backup import BackupConfig
from modules.errors import ValidationError

ENV_FLEET_ENDPOINT = "PENGUINMAILS_FLEET_S3_ENDPOINT"
ENV_FLEET_CA_FILE = "PENGUINMAILS_FLEET_S3_CA_FILE"
# Dev-stack fallbacks for the bucket, region, CA and secrets: the devenv s3's (tools/env.sh exports them).
ENV_BUCKET = "PENGUINMAILS_S3_BUCKET"
ENV_CA_FILE = "PENGUINMAILS_S3_CA_FILE"
ENV_SECRETS = {
    "backupS3AccessKey": "PENGUINMAILS_S3_ACCESS_KEY",
    "backupS3SecretKey": "PENGUINMAILS_S3_SECRET_KEY",
    "backupCipherPass": "PENGUINMAILS_BACKUP_CIPHER_PASS",
}
SECRET_VARS = {
    "backupS3AccessKey": "postgresql_backup_s3_access_key",
    "backupS3SecretKey": "postgresql_backup_s3_secret_key",
    "backupCipherPass": "postgresql_backup_cipher_pass",
}


def stanza_name(tier: str) -> str:
    """A fleet tier's stanza: its own cluster, so its own stanza (``fleet-oltp``)."""
    return f"fleet-{tier}"


def _env(dev: bool, variable: str) -> str | None:
    return (os.environ.get(variable) or None) if dev else None


def backup_vars(backup: BackupConfig, tier: str, *, dev: bool) -> dict[str, Any] | None:
    """The role's plain backup variables for ``tier``; None when backups are off (or, in a dev stack, when no
    endpoint reachable from the fleet is known). Raises :class:`ValidationError` naming the missing field."""
    if not backup.enabled:
        return None
    endpoint = _env(dev, ENV_FLEET_ENDPOINT) or backup.endpoint
    bucket = backup.bucket or _env(dev, ENV_BUCKET)
    if not endpoint:
        if dev:
            pulumi.log.warn(
                f"postgres.{tier}: no backup (set postgres.backup.endpoint or {ENV_FLEET_ENDPOINT} to an S3 "
                "endpoint the fleet hosts reach)"
            )
            return None
        raise ValidationError(
            "PostgresHost", [f"postgres.backup.endpoint: must be set to back up fleet tier {tier}"]
        )
    parts = urlsplit(endpoint)
    if parts.scheme != "https" or not parts.hostname:
        raise ValidationError(
            "PostgresHost", [f"postgres.backup.endpoint: must be https://host[:port], got {endpoint!r}"]
        )
    if not bucket:
        raise ValidationError(
            "PostgresHost", [f"postgres.backup.bucket: must be set to back up fleet tier {tier}"]
        )
    ca_path = _env(dev, ENV_FLEET_CA_FILE) or backup.ca_file or _env(dev, ENV_CA_FILE)
    ca_pem = ""
    if ca_path:
        try:
            ca_pem = Path(ca_path).read_text()
        except OSError as exc:
            raise ValidationError(
                "PostgresHost", [f"postgres.backup.ca_file: cannot read {ca_path}: {exc.strerror}"]
            ) from None
    schedule = backup.tier(tier)
    return {
        "postgresql_backup_enabled": True,
        "postgresql_backup_stanza": stanza_name(tier),
        "postgresql_backup_s3_endpoint": parts.hostname,
        "postgresql_backup_s3_port": parts.port or 443,
        "postgresql_backup_s3_bucket": bucket,
        "postgresql_backup_s3_region": backup.region,
        "postgresql_backup_s3_ca_certificate": ca_pem,
        "postgresql_backup_repo_path": f"{backup.repo_path.rstrip('/')}/{pulumi.get_stack()}",
        "postgresql_backup_retention_days": schedule.retention_days,
        "postgresql_backup_full_schedule": schedule.full_schedule,
        "postgresql_backup_diff_schedule": schedule.diff_schedule,
    }


def backup_secrets(*, dev: bool) -> pulumi.Output[dict[str, str]]:
    """The S3 keys and the cipher pass as one secret Output of role variables (dev: the devenv's first)."""
    config = pulumi.Config("penguinmails")
    values = {}
    for key, variable in SECRET_VARS.items():
        from_env = _env(dev, ENV_SECRETS[key])
        values[variable] = pulumi.Output.secret(from_env) if from_env else config.get_secret(key)
    missing = [key for key, variable in SECRET_VARS.items() if values[variable] is None]
    if missing:
        raise ValidationError(
            "PostgresHost",
            [f"{missing[0]}: not set (`pulumi config set --secret {missing[0]} …`) for fleet backups"],
        )
    return pulumi.Output.secret(pulumi.Output.all(**values))
