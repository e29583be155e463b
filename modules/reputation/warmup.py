"""The IP warm-up plan and the decision that moves an IP along it.

Where the curve comes from: the large senders' warm-up guides (SendGrid/Twilio's recommended schedule,
Mailgun's automatic warm-up) ramp a fresh dedicated IP from a few dozen or hundred messages a day to full
volume over three to four weeks, roughly doubling in the first days and flattening later, cap it per hour
so a day's budget is not spent in one burst, and treat an IP that has not sent for more than 30 days as cold
again. The default here is that shape: 21 days, geometric from 200 to 20,000 messages a day (rounded to two
significant figures), the hourly cap a tenth of the daily one, and tighter shares for the large receivers,
which judge new IPs hardest (Gmail, Microsoft, Yahoo/AOL).

:func:`decide` is pure: the plan, the IP's state, the time and its figures for the last period go in; what
to do (advance, hold, back off, re-warm, wait) with the new day, caps and the reason come out. The
scheduled job (:mod:`modules.reputation.warmup_job`) stores the answer; nothing here reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Receiver groups and the recipient domains they answer for (the groups the per-provider caps name).
PROVIDER_DOMAINS: dict[str, tuple[str, ...]] = {
    "google": ("gmail.com", "googlemail.com"),
    "microsoft": ("outlook.com", "hotmail.com", "live.com", "msn.com", "hotmail.co.uk", "outlook.de"),
    "yahoo": ("yahoo.com", "ymail.com", "rocketmail.com", "aol.com", "yahoo.co.uk", "yahoo.fr"),
}
DEFAULT_PROVIDER_SHARES: dict[str, float] = {"google": 0.3, "microsoft": 0.25, "yahoo": 0.2}


class Action(StrEnum):
    ADVANCE = "advance"  # one day further: the last period was healthy and long enough
    HOLD = "hold"  # stay on this day: receivers defer (throttle) too much, or too little was sent to judge
    BACK_OFF = "back_off"  # go back some days: bounces or complaints above their thresholds
    REWARM = "rewarm"  # back to day 1: the IP was idle longer than the plan allows
    WAIT = "wait"  # nothing to do yet: the day is not over, the operator holds the IP, or it is warm


def _two_figures(value: float) -> int:
    """Round to two significant figures (200, 260, 340 …): caps people can read and compare."""
    if value < 10:
        return max(1, round(value))
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return int(round(value / scale) * scale)


class WarmupPlan(BaseModel):
    """One IP's plan: the curve, how caps derive from it, and when the decision advances, holds or backs off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: int = Field(default=21, ge=2, le=90, description="days from the first to full volume")
    start_daily: int = Field(default=200, ge=1, description="messages on day 1")
    full_daily: int = Field(default=20000, ge=1, description="messages per day once warm")
    sending_hours: int = Field(
        default=10, ge=1, le=24, description="a day's cap spread over this many hours gives the hourly cap"
    )
    provider_shares: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_PROVIDER_SHARES),
        description="share of the daily cap each large receiver group may get (see PROVIDER_DOMAINS)",
    )
    idle_rewarm_days: int = Field(default=30, ge=1, description="idle longer than this: back to day 1")
    max_deferral_rate: float = Field(default=0.2, gt=0, le=1, description="above: hold the day")
    max_bounce_rate: float = Field(default=0.05, gt=0, le=1, description="above: back off")
    # Gmail's sender guidelines: keep reported spam under 0.1 %, never reach 0.3 %.
    max_complaint_rate: float = Field(default=0.001, gt=0, le=1, description="above: back off")
    back_off_days: int = Field(default=3, ge=1, description="days to go back on bounces or complaints")
    min_attempts: int = Field(default=20, ge=0, description="fewer attempts in a period: too little to judge")
    min_period_hours: float = Field(default=23.0, gt=0, description="a day on the plan lasts at least this")

    @model_validator(mode="after")
    def _curve_rises(self) -> WarmupPlan:
        reasons = []
        if self.full_daily < self.start_daily:
            reasons.append(f"full_daily ({self.full_daily}) is below start_daily ({self.start_daily})")
        unknown = sorted(set(self.provider_shares) - set(PROVIDER_DOMAINS))
        if unknown:
            reasons.append(
                f"provider_shares: unknown group(s) {', '.join(unknown)} (known: {', '.join(PROVIDER_DOMAINS)})"
            )
        bad = sorted(k for k, v in self.provider_shares.items() if not 0 < v <= 1)
        if bad:
            reasons.append(f"provider_shares: {', '.join(bad)} must be a share in (0, 1]")
        if reasons:
            raise ValueError("; ".join(reasons))
        return self

    def clamp(self, day: int) -> int:
        return min(max(day, 1), self.days)

    def daily_cap(self, day: int) -> int:
        """Messages per day on ``day`` (geometric from start to full; full from the last day on)."""
        day = self.clamp(day)
        if day == self.days or self.full_daily == self.start_daily:
            return self.full_daily
        ratio = (self.full_daily / self.start_daily) ** ((day - 1) / (self.days - 1))
        return min(self.full_daily, _two_figures(self.start_daily * ratio))

    def hourly_cap(self, day: int) -> int:
        return max(1, math.ceil(self.daily_cap(day) / self.sending_hours))

    def provider_caps(self, day: int) -> dict[str, int]:
        daily = self.daily_cap(day)
        return {group: max(1, int(daily * share)) for group, share in sorted(self.provider_shares.items())}

    def caps(self, day: int) -> Caps:
        day = self.clamp(day)
        return Caps(day, self.daily_cap(day), self.hourly_cap(day), self.provider_caps(day))

    def table(self) -> list[Caps]:
        return [self.caps(day) for day in range(1, self.days + 1)]


@dataclass(frozen=True)
class Caps:
    day: int
    daily: int
    hourly: int
    providers: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "day": self.day,
            "daily": self.daily,
            "hourly": self.hourly,
            "providers": dict(self.providers),
        }


@dataclass(frozen=True)
class IpState:
    """Where an IP stands: its day, whether an operator holds it, when it last advanced and last sent."""

    day: int
    held: bool = False
    last_advanced_at: datetime | None = None
    last_sent_at: datetime | None = None


@dataclass(frozen=True)
class Figures:
    """Delivery outcomes of one IP over a period (from the host's Postfix log, :mod:`postfix_log`)."""

    delivered: int = 0
    deferred: int = 0
    bounced: int = 0
    complaints: int = 0

    @property
    def attempts(self) -> int:
        return self.delivered + self.deferred + self.bounced

    def rate(self, count: int) -> float:
        return count / self.attempts if self.attempts else 0.0


@dataclass(frozen=True)
class Decision:
    action: Action
    day: int
    caps: Caps
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "action": str(self.action),
            "day": self.day,
            "caps": self.caps.as_dict(),
            "reason": self.reason,
        }


def decide(plan: WarmupPlan, state: IpState, now: datetime, figures: Figures) -> Decision:
    """What to do with one IP now, given its figures since it last advanced. Checks run in order of harm:
    an operator's hold, idleness, bounces and complaints, deferrals, then whether the day is over."""
    day = plan.clamp(state.day)

    def result(action: Action, new_day: int, reason: str) -> Decision:
        return Decision(action, plan.clamp(new_day), plan.caps(new_day), reason)

    if state.held:
        return result(Action.WAIT, day, "held by an operator (penguinmails warmup resume)")
    idle_limit = timedelta(days=plan.idle_rewarm_days)
    if state.last_sent_at is not None and figures.attempts == 0 and now - state.last_sent_at > idle_limit:
        idle = (now - state.last_sent_at).days
        if day == 1:
            return result(Action.WAIT, 1, f"idle {idle} days, already on day 1")
        return result(
            Action.REWARM, 1, f"idle {idle} days (more than {plan.idle_rewarm_days}): warm up again"
        )
    if figures.attempts >= max(plan.min_attempts, 1):
        bounce, complaint = figures.rate(figures.bounced), figures.rate(figures.complaints)
        if bounce > plan.max_bounce_rate or complaint > plan.max_complaint_rate:
            what = (
                f"bounce rate {bounce:.1%} above {plan.max_bounce_rate:.1%}"
                if bounce > plan.max_bounce_rate
                else f"complaint rate {complaint:.2%} above {plan.max_complaint_rate:.2%}"
            )
            return result(
                Action.BACK_OFF, day - plan.back_off_days, f"{what}: back {plan.back_off_days} days"
            )
        deferral = figures.rate(figures.deferred)
        if deferral > plan.max_deferral_rate:
            return result(
                Action.HOLD,
                day,
                f"deferral rate {deferral:.1%} above {plan.max_deferral_rate:.1%}: receivers throttle",
            )
    if state.last_advanced_at is not None and now - state.last_advanced_at < timedelta(
        hours=plan.min_period_hours
    ):
        return result(
            Action.WAIT, day, f"day {day} started {state.last_advanced_at:%Y-%m-%d %H:%M}, not over yet"
        )
    if day >= plan.days:
        return result(Action.WAIT, day, "warm: full volume")
    if figures.attempts < max(plan.min_attempts, 1):
        return result(
            Action.HOLD,
            day,
            f"{figures.attempts} attempts since day {day} began (fewer than {plan.min_attempts}): too little to judge",
        )
    return result(
        Action.ADVANCE,
        day + 1,
        f"{figures.attempts} attempts, deferrals {figures.rate(figures.deferred):.1%}, "
        f"bounces {figures.rate(figures.bounced):.1%}: day {day + 1}",
    )


def status_for(plan: WarmupPlan, day: int) -> str:
    """``smtp_ip_addresses.status`` / ``domain_ip_assignments.warmup_state`` for a day of the plan."""
    return "warmed" if plan.clamp(day) >= plan.days else "warming"
