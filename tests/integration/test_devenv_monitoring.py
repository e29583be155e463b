"""The dev stack's monitoring, for real: Debian's Prometheus, Alertmanager and exporters, and our sink.

Everything runs as a private copy on free loopback ports with its own folder (PostgreSQL, Redis and BIND
included), as the other devenv tests do, so the shared servers on 5433/6390/5353 and their ports
9387-9394 are neither restarted nor touched. One module-scoped stack serves every test; the last one
stops it and checks nothing is left.
"""

from __future__ import annotations

import json
import os
import stat
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest

from devenv.alert_sink import AlertSinkService
from devenv.base import port_open
from devenv.bind import BindService, free_port
from devenv.exporters import (
    MONITOR_ROLE,
    BindExporterService,
    PostgresExporterService,
    RedisExporterService,
)
from devenv.prometheus import AlertmanagerService, PrometheusService, http_json
from devenv.redis import RedisService
from modules.errors import DevenvError
from tests.support.postgres import private_cluster

pytestmark = pytest.mark.services

# Scrape, evaluation and file_sd refresh are 5 s; Alertmanager's group_wait 5 s: each wait is bounded.
WAIT = 60


def wait_for(check, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def gone(pid: int) -> bool:
    """The process exited (reaped here when it was this process's child)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def raw_post(url: str, body: bytes, content_type: str = "application/json") -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitoring")
    rules = root / "rules"
    rules.mkdir()
    started = time.monotonic()
    with private_cluster("pm-monitoring-") as postgres:
        redis = RedisService(root=root, port=free_port())
        bind = BindService(
            root=root,
            port=free_port(),
            zones=["monitoring.test"],
            key_name="pm-monitoring",
            stats_port=free_port(),
            acme_names=[],
        )
        sink = AlertSinkService(root=root, port=free_port())
        alertmanager = AlertmanagerService(root=root, port=free_port(), sink_port=sink.port)
        prometheus = PrometheusService(
            root=root, port=free_port(), alertmanager_port=alertmanager.port, rules=rules / "*.rules.yml"
        )
        exporters = [
            PostgresExporterService(root=root, port=free_port(), postgres=postgres),
            RedisExporterService(root=root, port=free_port(), redis=redis),
            BindExporterService(root=root, port=free_port(), bind=bind),
        ]
        services = [redis, bind, sink, alertmanager, *exporters, prometheus]
        try:
            for service in services:
                service.start()
            print(f"private monitoring stack started in {time.monotonic() - started:.1f} s")
            yield {
                "root": root,
                "rules": rules,
                "postgres": postgres,
                "services": services,
                "sink": sink,
                "alertmanager": alertmanager,
                "prometheus": prometheus,
                "exporters": exporters,
            }
        finally:
            for service in reversed(services):
                service.stop()


def test_every_target_prometheus_has_is_up_with_its_labels(stack):
    prometheus = stack["prometheus"]
    expected = {
        "prometheus": "monitoring",
        "alertmanager": "monitoring",
        "postgres": "postgres/devenv",
        "redis": "redis",
        "bind": "dns",
    }

    def all_up():
        targets = prometheus.targets_health()
        jobs = {t["labels"]["job"] for t in targets}
        return targets if jobs == set(expected) and all(t["health"] == "up" for t in targets) else None

    started = time.monotonic()
    targets = wait_for(all_up, "every target up")
    print(f"all {len(targets)} targets up after {time.monotonic() - started:.1f} s")
    for target in targets:
        labels = target["labels"]
        assert labels["stack"] == "devenv"
        assert labels["component"] == expected[labels["job"]], labels
    # The files devenv wrote are where the Pulumi side will add its own (one per stack).
    for job in expected:
        assert (stack["root"] / "prometheus" / "targets" / job / "devenv.json").exists()


@pytest.mark.parametrize(
    "expression",
    [
        'pg_up{job="postgres"} == 1',
        'pg_stat_database_numbackends{job="postgres", datname="postgres"}',
        'redis_up{job="redis"} == 1',
        'redis_memory_max_bytes{job="redis"} > 0',
        'bind_up{job="bind"} == 1',
        'bind_incoming_queries_total{job="bind"}',
    ],
)
def test_exporters_report_their_servers(stack, expression):
    prometheus = stack["prometheus"]
    if expression.startswith("bind_incoming"):
        # Give the server a query to count.
        bind = stack["exporters"][2].bind
        bind.soa_serial("monitoring.test")
    result = wait_for(lambda: prometheus.query(expression), expression)
    assert result, expression


def test_exporters_log_in_with_their_own_credentials_kept_off_the_command_line(stack):
    postgres_exporter, redis_exporter, _ = stack["exporters"]
    secrets = {
        postgres_exporter.secret("monitor.password"),
        redis_exporter.secret("monitor.password"),
        stack["postgres"].secret("admin.password"),
        redis_exporter.redis.secret("admin.password"),
    }
    for service in stack["exporters"]:
        pid = service.pid()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode()
        for secret in secrets:
            assert secret not in cmdline, service.name
            assert secret not in environ, service.name
    for path in (postgres_exporter.password_file, redis_exporter.password_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    # The PostgreSQL role reads statistics, nothing else: no superuser, no table data.
    env = stack["postgres"].env()
    with psycopg.connect(
        host=env["PENGUINMAILS_POSTGRES_HOST"],
        port=int(env["PENGUINMAILS_POSTGRES_PORT"]),
        user=env["PENGUINMAILS_POSTGRES_ADMIN_USER"],
        password=env["PENGUINMAILS_POSTGRES_ADMIN_PASSWORD"],
        dbname="postgres",
        autocommit=True,
    ) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS monitoring_probe (secret text)")
        row = admin.execute(
            "SELECT rolsuper, pg_has_role(rolname, 'pg_monitor', 'member') FROM pg_roles WHERE rolname = %s",
            [MONITOR_ROLE],
        ).fetchone()
    assert row == (False, True)
    with psycopg.connect(
        host=env["PENGUINMAILS_POSTGRES_HOST"],
        port=int(env["PENGUINMAILS_POSTGRES_PORT"]),
        user=MONITOR_ROLE,
        password=postgres_exporter.secret("monitor.password"),
        dbname="postgres",
    ) as monitor:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            monitor.execute("SELECT * FROM monitoring_probe")

    # The Redis user runs INFO but reads no key and writes nothing.
    import redis

    client = redis.Redis(
        port=redis_exporter.redis.port,
        username="penguinmails-monitor",
        password=redis_exporter.secret("monitor.password"),
    )
    assert client.info("server")["redis_version"]
    for command in (("GET", "k"), ("SET", "k", "v"), ("CONFIG", "SET", "maxmemory", "1")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    client.close()


def _sink_alerts(sink: AlertSinkService, alertname: str) -> list[dict]:
    payloads = http_json(f"{sink.url}/alerts")
    return [p for p in payloads if p.get("groupLabels", {}).get("alertname") == alertname]


def test_alert_posted_to_alertmanager_reaches_the_sink(stack):
    sink, alertmanager = stack["sink"], stack["alertmanager"]
    http_json(f"{sink.url}/alerts", method="DELETE")
    alertname = f"DevenvProbe{uuid.uuid4().hex[:8]}"
    labels = {"alertname": alertname, "stack": "devenv", "component": "redis", "severity": "ticket"}
    http_json(f"{alertmanager.url}/api/v2/alerts", method="POST", body=[{"labels": labels}])
    started = time.monotonic()
    payloads = wait_for(lambda: _sink_alerts(sink, alertname), f"{alertname} at the sink", timeout=30)
    print(f"Alertmanager -> sink in {time.monotonic() - started:.1f} s")
    payload = payloads[0]
    assert payload["status"] == "firing"
    assert payload["groupLabels"] == {"alertname": alertname, "stack": "devenv", "component": "redis"}
    assert payload["alerts"][0]["labels"]["severity"] == "ticket"
    # One line per payload in the sink's file, where tests of other pieces read them too.
    lines = (sink.dir / "alerts.jsonl").read_text().splitlines()
    assert any(json.loads(line)["groupLabels"].get("alertname") == alertname for line in lines)


def test_a_new_rule_file_is_loaded_by_a_reload_and_its_alert_reaches_the_sink(stack):
    """The whole path: a rule of the checkout's kind fires in Prometheus, Alertmanager routes it to the sink;
    the second start only reloads (same process)."""
    prometheus, sink = stack["prometheus"], stack["sink"]
    pid = prometheus.pid()
    alertname = f"DevenvRule{uuid.uuid4().hex[:8]}"
    (stack["rules"] / "probe.rules.yml").write_text(
        "groups:\n"
        "  - name: probe\n"
        "    rules:\n"
        f"      - alert: {alertname}\n"
        '        expr: up{job="prometheus"} == 1\n'
        "        labels: {severity: ticket, covers: prometheus}\n"
        "        annotations: {summary: probe}\n"
    )
    prometheus.start()
    assert prometheus.pid() == pid  # reloaded, not restarted
    groups = http_json(f"{prometheus.url}/api/v1/rules")["data"]["groups"]
    assert [r["name"] for g in groups for r in g["rules"]] == [alertname]
    started = time.monotonic()
    payloads = wait_for(lambda: _sink_alerts(sink, alertname), f"{alertname} at the sink", timeout=60)
    print(f"rule -> Prometheus -> Alertmanager -> sink in {time.monotonic() - started:.1f} s")
    alert = payloads[0]["alerts"][0]
    assert alert["labels"]["stack"] == "devenv" and alert["labels"]["component"] == "monitoring"

    # A broken rule file is refused with promtool's reason, and the running config stays as it was.
    (stack["rules"] / "broken.rules.yml").write_text(
        "groups:\n  - name: broken\n    rules:\n      - alert: X\n"
    )
    with pytest.raises(DevenvError, match="promtool rejected"):
        prometheus.start()
    (stack["rules"] / "broken.rules.yml").unlink()
    prometheus.start()
    assert prometheus.pid() == pid


def test_sink_refuses_bad_input_and_keeps_what_it_had(stack):
    sink = stack["sink"]
    before = http_json(f"{sink.url}/alerts")
    url = f"{sink.url}/alerts"
    assert raw_post(url, b"not json", "text/plain") == 400
    assert raw_post(url, b"\xff\xfe", "application/json") == 400
    assert raw_post(url, b"[1, 2]") == 400  # JSON, but not a webhook payload
    assert raw_post(url, b"{" + b" " * (2 * 1024 * 1024) + b"}") == 413
    assert raw_post(f"{sink.url}/elsewhere", b"{}") == 404
    assert http_json(f"{sink.url}/alerts") == before
    http_json(url, method="DELETE")
    assert http_json(url) == []


def test_second_start_is_idempotent(stack):
    pids = {service.name: service.pid() for service in stack["services"]}
    assert all(pids.values()), pids
    for service in stack["services"]:
        assert service.start().running
    assert {service.name: service.pid() for service in stack["services"]} == pids


def test_env_names_the_contract_variables(stack):
    env = {}
    for service in (stack["prometheus"], stack["alertmanager"], stack["sink"]):
        env.update(service.env())
    assert env["PENGUINMAILS_PROMETHEUS_URL"] == stack["prometheus"].url
    assert env["PENGUINMAILS_ALERTMANAGER_URL"] == stack["alertmanager"].url
    assert env["PENGUINMAILS_ALERT_SINK_URL"] == stack["sink"].url
    assert env["PENGUINMAILS_PROMETHEUS_TARGETS_DIR"] == str(stack["root"] / "prometheus" / "targets")


def test_stop_leaves_no_process(stack):
    """Last in the module: stop everything, in reverse start order, and find no process or listener left."""
    monitoring = stack["services"][2:]
    pids = {service.name: service.pid() for service in monitoring}
    for service in reversed(monitoring):
        assert service.stop().running is False
    for service in monitoring:
        assert service.pid() is None, service.name
        assert not port_open(service.host, service.port), f"{service.name} still listens on {service.address}"
        assert wait_for(lambda pid=pids[service.name]: gone(pid), f"{service.name} to exit", timeout=10)
    assert all(service.stop().running is False for service in monitoring)  # stopping again is harmless
