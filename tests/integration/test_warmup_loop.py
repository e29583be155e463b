"""The scheduled warm-up job on real parts: the devenv Prometheus, an OLTP tier, a registered node.

A stand-in for a host's node exporter serves ``penguinmails_smtp_deliveries_total`` (the monitoring_agent
role's counter) for a test stack's sending IP; the devenv Prometheus scrapes it through a file_sd target
of that stack. The exporter's warm-up loop then starts the IP's plan, and once the counters show
receivers deferring most attempts it holds the day, with the figures it read stored in OLTP. A Prometheus
that does not answer leaves the IP undecided.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client.core import GaugeMetricFamily

from devenv.prometheus import http_json, targets_dir, write_targets
from modules.monitoring.warmup_loop import WarmupLoop
from modules.postgres.client import connection_url
from modules.postgres.fleet_registry import FleetNodeArgs, FleetNodeProvider
from modules.reputation.warmup import Action, WarmupPlan
from modules.reputation.warmup_store import WarmupStore
from tests.support.postgres import provision, teardown

pytestmark = pytest.mark.services

IP = "192.0.2.71"


class _Counters:
    def __init__(self):
        self.values = {"sent": 0, "deferred": 0, "bounced": 0}

    def text(self) -> str:
        lines = ["# TYPE penguinmails_smtp_deliveries_total counter"]
        lines += [
            f'penguinmails_smtp_deliveries_total{{sending_ip="{IP}",status="{s}"}} {n}'
            for s, n in self.values.items()
        ]
        return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def scraped(devenv_env):
    counters = _Counters()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = counters.text().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stack = f"itest-warmup-{uuid.uuid4().hex[:6]}"
    path = write_targets(
        None, "node", [f"127.0.0.1:{server.server_port}"], {"component": "fleet/mx-1"}, stack
    )
    db = provision("oltp")
    provider = FleetNodeProvider()
    node = provider.create(
        FleetNodeArgs(
            tier="oltp", database=db.database, mark=f"pulumi:penguinmails/{stack}/mx-1", server_id="7171",
            hostname="mx-1.fleet.example.net", ip=IP,
        ).props()
    )  # fmt: skip
    url = connection_url(
        db.role("warmup"), db.passwords["warmup"], db.target.host, db.target.port, db.database, "disable"
    )
    try:
        yield {"counters": counters, "stack": stack, "db": db, "url": url, "prometheus": devenv_env[
            "PENGUINMAILS_PROMETHEUS_URL"]}  # fmt: skip
    finally:
        path.unlink(missing_ok=True)
        provider.delete(node.id, node.outs)
        teardown(db)
        server.shutdown()
        server.server_close()
    assert not (targets_dir(None) / "node" / f"{stack}.json").exists()


def _series_value(prometheus: str, stack: str, status: str) -> float | None:
    query = f'penguinmails_smtp_deliveries_total{{stack="{stack}",status="{status}"}}'
    found = http_json(f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': query})}")
    result = found["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def _wait_scraped(scraped, status: str, value: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _series_value(scraped["prometheus"], scraped["stack"], status) == value:
            return
        time.sleep(1)
    pytest.fail(
        f"Prometheus did not scrape {status}={value} of stack {scraped['stack']} within {seconds:.0f} s"
    )


def _loop(scraped, prometheus: str | None = None) -> WarmupLoop:
    return WarmupLoop(
        stack=scraped["stack"],
        warmup_url=scraped["url"],
        prometheus_url=prometheus or scraped["prometheus"],
        plan=WarmupPlan(),
        start_day=3,
        interval=3600,
    )


def test_the_job_starts_the_plan_then_holds_the_day_on_the_scraped_deferrals(scraped):
    _wait_scraped(scraped, "sent", 0)
    loop = _loop(scraped)
    first = loop.run_once()
    assert first.error is None
    assert [r.started for r in first.results] == [True]
    (plan,) = [p for p in first.plans if p.ip == IP]
    assert plan.state.day == 3 and plan.caps.daily == WarmupPlan().daily_cap(3)

    counters = scraped["counters"].values
    counters.update(sent=30, deferred=70)  # receivers throttle: 70 % of attempts deferred
    _wait_scraped(scraped, "deferred", 70)
    time.sleep(6)  # one more scrape at the same values, so increase() has the step inside its window
    second = loop.run_once()
    (result,) = second.results
    assert result.error is None, result.error
    assert result.decision.action == Action.HOLD, result.decision
    assert "deferral rate" in result.decision.reason, result.decision.reason  # not "too little to judge"
    # increase() extrapolates to the window's edges: the figures are the step, give or take a scrape.
    assert 30 <= result.figures.delivered <= 45 and 70 <= result.figures.deferred <= 100, result.figures
    stored = {p.ip: p for p in WarmupStore(scraped["url"]).plans()}[IP]
    assert stored.state.day == 3
    assert stored.last_decision["action"] == "hold"
    assert stored.last_decision["figures"]["deferred"] == result.figures.deferred

    up = GaugeMetricFamily("penguinmails_source_up", "", labels=["source"])
    metrics = {m.name: m for m in loop.collect(up)}
    assert [s.value for s in metrics["penguinmails_warmup_day"].samples] == [3]
    assert [s.value for s in metrics["penguinmails_warmup_undecided"].samples] == [0]
    assert [s.value for s in up.samples] == [1]


def test_without_prometheus_the_ip_is_not_decided(scraped):
    before = {p.ip: p for p in WarmupStore(scraped["url"]).plans()}[IP].last_decision
    loop = _loop(scraped, prometheus="http://127.0.0.1:9")  # nothing listens on the discard port
    found = loop.run_once()
    (result,) = found.results
    assert result.decision is None and "did not answer" in result.error
    assert found.undecided == (IP,)
    assert {p.ip: p for p in WarmupStore(scraped["url"]).plans()}[IP].last_decision == before
    up = GaugeMetricFamily("penguinmails_source_up", "", labels=["source"])
    metrics = {m.name: m for m in loop.collect(up)}
    assert [s.value for s in metrics["penguinmails_warmup_undecided"].samples] == [1]
    assert datetime.fromtimestamp(found.finished, UTC) <= datetime.now(UTC)
