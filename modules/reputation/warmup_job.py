"""The scheduled warm-up job: figures from each host's Postfix log, a decision per IP, stored and rendered.

Why the queue's ``warmup`` queue and not pg_cron on the OLTP tier: the figures live in the hosts' Postfix
logs, which a job inside PostgreSQL cannot read; a queue worker (Python, on the platform side) reaches the
hosts over SSH like Ansible does, and the OLTP tier through the ``warmup`` duty. :func:`handle` is the
handler for jobs ``{"kind": "ip-warmup-cycle"}`` of that queue; :func:`run_cycle` is the plain function it
calls. After a cycle the new caps go to the hosts as the postfix
role's variables (:func:`host_caps`), through the next converge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from modules.reputation import postfix_log
from modules.reputation.warmup import Decision, IpState, WarmupPlan, decide
from modules.reputation.warmup_store import StoredPlan, WarmupStore

log = logging.getLogger("penguinmails.reputation.warmup")
JOB_KIND = "ip-warmup-cycle"
QUEUE = "warmup"


@dataclass(frozen=True)
class HostLog:
    """One host's Postfix log lines and its sending IPs (transport name → address)."""

    lines: list[str]
    ips: dict[str, str]
    default: str | None = None  # the transport name the shared relay/smtp transports stand for


@dataclass
class CycleResult:
    ip: str
    started: bool = False
    decision: Decision | None = None
    stored: bool = False
    figures: postfix_log.IpFigures = field(default_factory=postfix_log.IpFigures)


def figures_for(
    logs: Iterable[HostLog], ip: str, since: datetime | None, now: datetime
) -> postfix_log.IpFigures:
    """``ip``'s attempts since ``since`` over every host that sends from it."""
    total = postfix_log.IpFigures()
    for host in logs:
        names = [name for name, address in host.ips.items() if address == ip]
        if not names:
            continue
        found = postfix_log.count(host.lines, now=now, since=since, default_ip=host.default)
        for name in names:
            part = found.get(name)
            if part is None:
                continue
            total.delivered += part.delivered
            total.deferred += part.deferred
            total.bounced += part.bounced
            if part.last_sent_at and (total.last_sent_at is None or part.last_sent_at > total.last_sent_at):
                total.last_sent_at = part.last_sent_at
            for group, n in part.providers.items():
                total.providers[group] = total.providers.get(group, 0) + n
    return total


def run_cycle(
    store: WarmupStore,
    logs: list[HostLog],
    plan: WarmupPlan,
    start_day: int,
    now: datetime,
    complaints: Mapping[str, int] | None = None,
) -> list[CycleResult]:
    """One pass over every sending IP: start missing plans, decide and record the others."""
    results = []
    for stored in store.plans():
        result = CycleResult(stored.ip)
        if stored.plan is None:
            result.started = store.start(stored.ip, plan, start_day, now)
            log.info("Warm-up[%s]: plan started on day %s", stored.ip, start_day)
            results.append(result)
            continue
        state = stored.state
        result.figures = figures_for(logs, stored.ip, state.last_advanced_at, now)
        figures = result.figures.figures((complaints or {}).get(stored.ip, 0))
        last_sent = result.figures.last_sent_at
        current = IpState(
            state.day,
            state.held,
            state.last_advanced_at,
            max(filter(None, [state.last_sent_at, last_sent]), default=None),
        )
        result.decision = decide(stored.plan, current, now, figures)
        # Every decision is stored, waits too: `warmup status` shows the figures and reason of the last run.
        result.stored = store.record(stored.ip, state.day, result.decision, now, last_sent, figures)
        log.info(
            "Warm-up[%s]: %s → day %s (%s)",
            stored.ip,
            result.decision.action,
            result.decision.day,
            result.decision.reason,
        )
        results.append(result)
    return results


def host_caps(plans: list[StoredPlan], sending_ips: list[dict]) -> dict[str, object]:
    """The postfix role's warm-up variables for one host from its ``postfix_sending_ips`` and the stored plans:
    each IP's day (``warmup_stage``, clamped to the role's 1-21) and ``hourly_cap``, and
    ``postfix_warmup_daily_caps``. IPs without a plan keep their entry unchanged and get no daily cap."""
    by_ip = {p.ip: p for p in plans if p.caps is not None}
    ips, caps = [], []
    for entry in sending_ips:
        found = by_ip.get(entry["address"])
        if found is None:
            ips.append(dict(entry))
            continue
        ips.append(
            {**entry, "warmup_stage": min(max(found.caps.day, 1), 21), "hourly_cap": found.caps.hourly}
        )
        caps.append(
            {
                "name": entry["name"],
                "daily_cap": found.caps.daily,
                "provider_caps": dict(found.caps.providers),
            }
        )
    return {"postfix_sending_ips": ips, "postfix_warmup_daily_caps": caps}


def handle(
    job,
    context: Callable[[], tuple[WarmupStore, list[HostLog], WarmupPlan, int]],
    now: Callable[[], datetime],
):
    """The ``warmup`` queue's handler for ``{"kind": "ip-warmup-cycle"}`` jobs (others are not ours: raise, so
    they retry and end as dead letters someone looks at)."""
    kind = (job.payload or {}).get("kind")
    if kind != JOB_KIND:
        raise ValueError(f"warmup queue: unknown job kind {kind!r}")
    store, logs, plan, start = context()
    return [r.ip for r in run_cycle(store, logs, plan, start, now())]
