"""IP warm-up state in the OLTP tier, through the ``warmup.*`` functions only (schemas/oltp/0010_*).

Connects as the tier's ``warmup`` duty (the stack output ``postgres_oltp_warmup_url``), which may execute
those functions and touch no table: starting a plan, recording a decision, holding and resuming.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

import psycopg

from modules.errors import ToolkitError
from modules.reputation.warmup import Caps, Decision, Figures, IpState, WarmupPlan


class WarmupStoreError(ToolkitError):
    """The OLTP tier refused or failed a warm-up change."""


@dataclass(frozen=True)
class StoredPlan:
    ip: str
    status: str
    plan: WarmupPlan | None
    state: IpState | None
    caps: Caps | None
    held_reason: str | None
    last_decision: dict | None


class WarmupStore:
    def __init__(self, url: str, application_name: str = "penguinmails-warmup"):
        self.url, self.application_name = url, application_name

    def _call(self, query: str, params: list | tuple = ()) -> list[tuple]:
        try:
            with psycopg.connect(
                self.url, application_name=self.application_name, connect_timeout=10
            ) as conn:
                return conn.execute(query, params).fetchall()
        except psycopg.errors.RaiseException as exc:
            raise WarmupStoreError(exc.diag.message_primary or str(exc)) from None
        except psycopg.Error as exc:
            raise WarmupStoreError(
                f"warm-up state: {exc.diag.message_primary or type(exc).__name__}"
            ) from None

    def plans(self) -> list[StoredPlan]:
        rows = self._call(
            "SELECT ip, status, day, held, held_reason, daily_cap, hourly_cap, provider_caps, plan, "
            "last_advanced_at, last_sent_at, last_decision FROM warmup.plans()"
        )
        found = []
        for ip, status, day, held, reason, daily, hourly, providers, plan, advanced, sent, decision in rows:
            if plan is None:
                found.append(StoredPlan(str(ip), status, None, None, None, None, None))
                continue
            found.append(
                StoredPlan(
                    str(ip),
                    status,
                    WarmupPlan.model_validate(plan),
                    IpState(day=day, held=held, last_advanced_at=advanced, last_sent_at=sent),
                    Caps(day, daily, hourly, dict(providers)),
                    reason,
                    decision,
                )
            )
        return found

    def start(self, ip: str, plan: WarmupPlan, day: int, started_at: datetime) -> bool:
        """A plan for ``ip`` from ``day`` on, unless it has one (False then)."""
        caps = plan.caps(day)
        rows = self._call(
            "SELECT warmup.plan_start(%s, %s::jsonb, %s, %s, %s, %s::jsonb, %s)",
            [
                ip,
                plan.model_dump_json(),
                caps.day,
                caps.daily,
                caps.hourly,
                json.dumps(caps.providers),
                started_at,
            ],
        )
        return bool(rows[0][0])

    def record(
        self,
        ip: str,
        expected_day: int,
        decision: Decision,
        at: datetime,
        last_sent_at: datetime | None,
        figures: Figures | None = None,
    ) -> bool:
        """Store ``decision`` if the plan is still on ``expected_day`` (False: it moved meanwhile)."""
        moved = decision.action in ("advance", "back_off", "rewarm")
        rows = self._call(
            "SELECT warmup.plan_record(%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s)",
            [
                ip,
                expected_day,
                decision.day,
                decision.caps.daily,
                decision.caps.hourly,
                json.dumps(decision.caps.providers),
                json.dumps(
                    {
                        **decision.as_dict(),
                        "at": at.isoformat(),
                        "figures": asdict(figures) if figures else None,
                    }
                ),
                moved,
                at,
                last_sent_at,
            ],
        )
        return bool(rows[0][0])

    def hold(self, ip: str, held: bool, reason: str | None = None) -> None:
        rows = self._call("SELECT warmup.plan_hold(%s, %s, %s)", [ip, held, reason])
        if not rows[0][0]:
            raise WarmupStoreError(f"sending IP {ip} has no warm-up plan (the warm-up job starts one)")
