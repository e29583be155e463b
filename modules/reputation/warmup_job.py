"""The scheduled warm-up job: each IP's delivery figures, a decision per IP, stored and rendered.

Why not pg_cron on the OLTP tier: the figures come from the hosts' Postfix logs, which a job inside
PostgreSQL cannot read. :func:`run_cycle` takes them from a *figures source*: the logs themselves
(:func:`log_source`, :class:`HostLog`) or Prometheus, which scrapes each host's
``penguinmails_smtp_deliveries_total`` (:mod:`modules.reputation.warmup_figures`; what the penguinmails
exporter's warm-up loop uses, modules/monitoring/exporter.py). A source that cannot answer for an IP
raises, and that IP is not decided this cycle: zero attempts read from nothing would look like an idle IP.
:func:`handle` is the handler of ``{"kind": "ip-warmup-cycle"}`` jobs for the queue's ``warmup`` queue.
After a cycle the new caps reach the hosts through the exporter's routes endpoint and each host's sender
routes agent (modules/monitoring/routes.py); :func:`host_caps` gives the same caps as the postfix role's
variables, for a converge by hand.
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
    error: str | None = None  # why this IP was not decided (its figures could not be read)


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


FiguresSource = Callable[[str, "datetime | None", datetime], postfix_log.IpFigures]


def log_source(logs: Iterable[HostLog]) -> FiguresSource:
    """Figures from the hosts' Postfix log lines (:func:`figures_for`)."""
    logs = list(logs)
    return lambda ip, since, now: figures_for(logs, ip, since, now)


def run_cycle(
    store: WarmupStore,
    source: list[HostLog] | FiguresSource,
    plan: WarmupPlan,
    start_day: int,
    now: datetime,
    complaints: Mapping[str, int] | None = None,
) -> list[CycleResult]:
    """One pass over every sending IP: start missing plans, decide and record the others. ``source`` is
    the hosts' logs or a figures source; an IP whose figures it cannot give is skipped (``error`` set)."""
    figures_of = log_source(source) if isinstance(source, list) else source
    results = []
    for stored in store.plans():
        result = CycleResult(stored.ip)
        if stored.plan is None:
            result.started = store.start(stored.ip, plan, start_day, now)
            log.info("Warm-up[%s]: plan started on day %s", stored.ip, start_day)
            results.append(result)
            continue
        state = stored.state
        try:
            result.figures = figures_of(stored.ip, state.last_advanced_at, now)
        except Exception as exc:  # no figures, no decision (see the module docstring)
            result.error = f"{type(exc).__name__}: {exc}"
            log.warning("Warm-up[%s]: not decided this cycle, no figures: %s", stored.ip, result.error)
            results.append(result)
            continue
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
