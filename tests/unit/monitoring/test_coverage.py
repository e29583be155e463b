"""Coverage: components from a stack's state against what Prometheus reports (API answers as recorded)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from modules.monitoring.coverage import CoverageError, components_from_state, coverage

PLATFORM = "urn:pulumi:dev::penguinmails::penguinmails:platform:Platform::penguinmails"
FLEET = "urn:pulumi:dev::penguinmails::penguinmails:platform:Platform$penguinmails:hostwinds:VpsFleet::penguinmails-fleet"
REDIS_FLEET = "urn:pulumi:dev::penguinmails::penguinmails:platform:Platform$penguinmails:hostwinds:VpsFleet::penguinmails-redis-vps"


def _vps(parent: str, name: str) -> dict:
    return {
        "urn": f"{parent}$pulumi-python:dynamic/hostwinds:Vps::{name}",
        "type": "pulumi-python:dynamic/hostwinds:Vps",
        "parent": parent,
        "outputs": {"name": name.rsplit("-", 2)[-2] + "-" + name.rsplit("-", 1)[-1]},
    }


STATE = [
    {"urn": PLATFORM, "type": "penguinmails:platform:Platform"},
    {"urn": FLEET, "type": "penguinmails:hostwinds:VpsFleet", "parent": PLATFORM},
    _vps(FLEET, "penguinmails-fleet-mx-01"),
    _vps(FLEET, "penguinmails-fleet-mx-02"),
    {"urn": REDIS_FLEET, "type": "penguinmails:hostwinds:VpsFleet", "parent": PLATFORM},
    _vps(REDIS_FLEET, "penguinmails-redis-vps-redis-01"),
    {
        "urn": f"{PLATFORM}$penguinmails:ansible:MailHosts::penguinmails-mail",
        "type": "penguinmails:ansible:MailHosts",
    },
    {
        "urn": f"{PLATFORM}$penguinmails:postgres:Tier::penguinmails-postgres-oltp",
        "type": "penguinmails:postgres:Tier",
    },
    {
        "urn": f"{PLATFORM}$penguinmails:postgres:Tier::penguinmails-postgres-queue",
        "type": "penguinmails:postgres:Tier",
    },
    {"urn": f"{PLATFORM}$pulumi-python:dynamic/redis:User::q", "type": "pulumi-python:dynamic/redis:User"},
    {"urn": f"{PLATFORM}$penguinmails:dns:MailDns::penguinmails-dns", "type": "penguinmails:dns:MailDns"},
]


def test_components_come_from_the_state_and_the_redis_host_is_not_a_mail_node() -> None:
    ids = [c.id for c in components_from_state(STATE)]
    assert ids == [
        "dns",
        "fleet/mx-01",
        "fleet/mx-02",
        "postgres/oltp",
        "postgres/queue",
        "queue",
        "redis",
        "reputation",
    ]


def test_without_a_converge_the_fleet_nodes_are_not_mail_hosts() -> None:
    ids = [
        c.id
        for c in components_from_state([r for r in STATE if r["type"] != "penguinmails:ansible:MailHosts"])
    ]
    assert not any(i.startswith("fleet/") for i in ids) and "reputation" not in ids


class _Prometheus(BaseHTTPRequestHandler):
    targets: list = []
    rules: list = []

    def do_GET(self) -> None:
        data = (
            {"activeTargets": self.targets}
            if self.path.startswith("/api/v1/targets")
            else {"groups": self.rules}
        )
        body = json.dumps({"status": "success", "data": data}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def prometheus():
    server = HTTPServer(("127.0.0.1", 0), _Prometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def _target(job: str, component: str, health: str = "up", stack: str = "dev") -> dict:
    return {
        "labels": {"job": job, "stack": stack, "component": component},
        "health": health,
        "scrapeUrl": f"http://{component}/{job}",
    }


def test_a_row_per_component_and_job_with_its_gaps(prometheus) -> None:
    _Prometheus.targets = [
        _target("node", "fleet/mx-01"),
        _target("postfix", "fleet/mx-01", health="down"),
        _target("node", "fleet/mx-02", stack="staging"),  # another stack's node does not count
    ]
    _Prometheus.rules = [
        {"rules": [{"name": "HostDown", "labels": {"covers": "node"}}, {"name": "X", "labels": {}}]}
    ]
    components = [c for c in components_from_state(STATE) if c.id.startswith("fleet/")]
    rows = {
        (r.component, r.job): r
        for r in coverage(components, "dev", f"http://127.0.0.1:{prometheus.server_port}")
    }
    assert rows[("fleet/mx-01", "node")].ok and rows[("fleet/mx-01", "node")].rules == ["HostDown"]
    assert rows[("fleet/mx-01", "postfix")].gap() == "target down"
    assert rows[("fleet/mx-02", "node")].gap() == "no scrape target"
    _Prometheus.targets.append(_target("postfix", "fleet/mx-02"))
    _Prometheus.targets.append(_target("postfix", "fleet/mx-01"))
    rows = {
        (r.component, r.job): r
        for r in coverage(components, "dev", f"http://127.0.0.1:{prometheus.server_port}")
    }
    assert rows[("fleet/mx-02", "postfix")].gap() == "no alert rule"
    assert not rows[("fleet/mx-01", "postfix")].ok  # one of its two targets is still down


def test_an_unreachable_prometheus_is_one_clear_error() -> None:
    with pytest.raises(CoverageError, match="is it running"):
        coverage([], "dev", "http://127.0.0.1:9")
