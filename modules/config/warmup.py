"""The ``warmup:`` section: each sending IP's warm-up plan and when the job that moves it runs.

Replaces the static ``mail.warmup_stage``: a stack that still sets it keeps working, the value becoming the
day new plans start on (see :func:`start_day` and README "IP warm-up").
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from modules.reputation.warmup import Caps, WarmupPlan

DEPRECATED_STAGE = "mail.warmup_stage"


class WarmupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    plan: WarmupPlan = Field(default_factory=WarmupPlan, description="the plan every new sending IP gets")
    start_day: int | None = Field(
        default=None,
        ge=1,
        description=f"day new plans start on; default 1, or the deprecated {DEPRECATED_STAGE}",
    )
    # The job runs once a day at this UTC hour.
    advance_hour_utc: int = Field(default=6, ge=0, le=23)


def start_day(config: Any) -> int:
    """The day new plans start on: ``warmup.start_day``, else an explicitly set ``mail.warmup_stage``, else 1."""
    warmup = getattr(config, "warmup", None) or WarmupConfig()
    if warmup.start_day is not None:
        return warmup.plan.clamp(warmup.start_day)
    mail = getattr(config, "mail", None)
    if mail is not None and "warmup_stage" in mail.model_fields_set:
        return warmup.plan.clamp(mail.warmup_stage)
    return 1


def start_caps(config: Any) -> Caps | None:
    """The caps of the plan's start day, which a fresh host enforces until the warm-up job says otherwise
    (and which a stack without the job keeps); None when the stack turns warm-up off."""
    warmup = getattr(config, "warmup", None) or WarmupConfig()
    if not warmup.enabled:
        return None
    return warmup.plan.caps(start_day(config))


def deprecations(config: Any) -> list[str]:
    """Messages for settings that still work but should move (printed by `pulumi up` and `config check`)."""
    mail = getattr(config, "mail", None)
    if mail is not None and "warmup_stage" in mail.model_fields_set:
        return [
            f"{DEPRECATED_STAGE} is deprecated: it is now only the day new IP warm-up plans start on "
            f"(day {mail.warmup_stage}); set warmup.start_day instead and let the warm-up job move each IP "
            "(README: IP warm-up)"
        ]
    return []
