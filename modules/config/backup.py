"""The ``postgres.backup`` section: pgBackRest to S3-compatible storage, schedules and retention per tier.

One stanza per cluster: tiers that share a cluster (the dev stack's four) share one stanza, whose retention
is the longest of theirs (:meth:`BackupConfig.retention_for`). The S3 keys and the repository cipher pass
are secret config values (``backupS3AccessKey``, ``backupS3SecretKey``, ``backupCipherPass``); a dev stack
takes them from the devenv's ``s3`` service instead.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modules.postgres.cron import schedule_problem

SECRET_KEYS = ("backupS3AccessKey", "backupS3SecretKey", "backupCipherPass")
DEFAULT_RETENTION_DAYS = {"oltp": 90, "content": 180, "queue": 30, "analytics": 365}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _cron(value: str) -> str:
    problem = schedule_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class TierBackupConfig(_Strict):
    """When a tier is backed up (cron, UTC) and how long its full backups are kept."""

    full_schedule: str = "30 2 * * 0"  # weekly full, Sunday 02:30
    diff_schedule: str = "30 2 * * 1-6"  # daily differential the other days
    retention_days: int = Field(default=90, ge=1, le=3650)

    @field_validator("full_schedule", "diff_schedule")
    @classmethod
    def _schedules(cls, value: str) -> str:
        return _cron(value)


def _tier_default(tier: str) -> TierBackupConfig:
    return TierBackupConfig(retention_days=DEFAULT_RETENTION_DAYS[tier])


class BackupConfig(_Strict):
    """Where the repository is (S3 API) and the per-tier schedules; secrets are not fields here."""

    enabled: bool = True
    # https://host[:port]; a dev stack takes the devenv's PENGUINMAILS_S3_ENDPOINT first.
    endpoint: str | None = None
    bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    region: str = "us-east-1"
    uri_style: Literal["path", "host"] = "path"
    verify_tls: bool = True
    ca_file: str | None = None
    # Prefix of the stanzas in the bucket: <repo_path>/<stack>; default /penguinmails.
    repo_path: str = Field(default="/penguinmails", pattern=r"^/[A-Za-z0-9_./-]{0,200}$")
    process_max: int = Field(default=2, ge=1, le=16)
    # The restore drill in production stacks: weekly by default (cron, UTC).
    drill_schedule: str = "0 5 * * 6"
    oltp: TierBackupConfig = Field(default_factory=lambda: _tier_default("oltp"))
    content: TierBackupConfig = Field(default_factory=lambda: _tier_default("content"))
    analytics: TierBackupConfig = Field(default_factory=lambda: _tier_default("analytics"))
    queue: TierBackupConfig = Field(default_factory=lambda: _tier_default("queue"))

    @field_validator("endpoint")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("endpoint must start with https:// (pgBackRest speaks only HTTPS to S3)")
        return value

    @field_validator("drill_schedule")
    @classmethod
    def _drill_cron(cls, value: str) -> str:
        return _cron(value)

    def tier(self, tier: str) -> TierBackupConfig:
        return getattr(self, tier)

    def retention_for(self, tiers: list[str]) -> int:
        """Tiers sharing one cluster share its stanza: keep backups as long as the longest of them wants."""
        return max(self.tier(tier).retention_days for tier in tiers)
