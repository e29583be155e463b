"""The scheduled warm-up job, run by the penguinmails exporter: a cycle every ``warmup_interval_seconds``.

Each cycle starts a plan for every registered sending IP that has none (modules/postgres/fleet_registry.py
registers the fleet's), and decides the others from their figures since their last advance, read from
Prometheus (:class:`~modules.reputation.warmup_figures.PrometheusFigures`): advance, wait, hold on
deferrals, back off on bounces, re-warm after idle days (:func:`modules.reputation.warmup.decide`). An IP
whose figures cannot be read is not decided. The decisions are stored through the OLTP tier's ``warmup``
duty; the exporter serves each IP's day, caps and hold as metrics, and the cycle's time.

Running hourly is safe: a day only advances once the plan's day is over, and every run records its
decision (``penguinmails warmup status`` shows the last one).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily

from modules.monitoring.periodic import Periodic
from modules.reputation.warmup import WarmupPlan
from modules.reputation.warmup_figures import PrometheusFigures
from modules.reputation.warmup_job import CycleResult, run_cycle
from modules.reputation.warmup_store import StoredPlan, WarmupStore


@dataclass(frozen=True)
class WarmupRound:
    finished: float
    results: tuple[CycleResult, ...] = ()
    plans: tuple[StoredPlan, ...] = ()
    error: str | None = None  # the OLTP tier could not be read or written: nothing was decided
    undecided: tuple[str, ...] = field(default=())


class WarmupLoop(Periodic):
    what = "warm-up cycle"

    def __init__(
        self,
        *,
        stack: str,
        warmup_url: str | None,
        prometheus_url: str | None,
        plan: WarmupPlan | None,
        start_day: int,
        interval: float,
        clock=lambda: datetime.now(UTC),
    ):
        super().__init__(interval)
        self.stack, self.url, self.prometheus_url = stack, warmup_url, prometheus_url
        self.plan, self.start_day, self.clock = plan or WarmupPlan(), start_day, clock

    def wanted(self) -> bool:
        return bool(self.url and self.prometheus_url)

    def check(self) -> WarmupRound:
        assert self.url and self.prometheus_url
        store = WarmupStore(self.url, application_name="penguinmails-exporter-warmup")
        try:
            results = run_cycle(
                store,
                PrometheusFigures(self.prometheus_url, self.stack),
                self.plan,
                self.start_day,
                self.clock(),
            )
            plans = store.plans()
        except Exception as exc:  # OLTP down: no decision this cycle, said in the metrics
            return WarmupRound(time.time(), error=f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        undecided = tuple(r.ip for r in results if r.error)
        return WarmupRound(time.time(), tuple(results), tuple(plans), undecided=undecided)

    def collect(self, up: GaugeMetricFamily) -> Iterator[GaugeMetricFamily]:
        last = self.last
        if last is None:
            return
        up.add_metric(["warmup"], 0.0 if last.error else 1.0)
        yield GaugeMetricFamily(
            "penguinmails_warmup_cycle_timestamp_seconds",
            "When the last warm-up cycle finished",
            value=last.finished,
        )
        if last.error:
            return
        day = GaugeMetricFamily("penguinmails_warmup_day", "The IP's day of its warm-up plan", labels=["ip"])
        daily = GaugeMetricFamily("penguinmails_warmup_daily_cap", "The IP's daily cap today", labels=["ip"])
        held = GaugeMetricFamily(
            "penguinmails_warmup_held", "1 while an operator holds the IP", labels=["ip"]
        )
        undecided = GaugeMetricFamily(
            "penguinmails_warmup_undecided",
            "1 when the last cycle could not read the IP's figures (no decision)",
            labels=["ip"],
        )
        for plan in last.plans:
            if plan.state is None or plan.caps is None:
                continue
            day.add_metric([plan.ip], plan.state.day)
            daily.add_metric([plan.ip], plan.caps.daily)
            held.add_metric([plan.ip], 1.0 if plan.state.held else 0.0)
            undecided.add_metric([plan.ip], 1.0 if plan.ip in last.undecided else 0.0)
        yield from (day, daily, held, undecided)
