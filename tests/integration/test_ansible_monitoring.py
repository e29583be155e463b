"""The monitoring role on a real podman host: converge twice, then Prometheus, its rules and targets,
and Alertmanager's route to a webhook, asked from inside the host (the web UIs listen on loopback only).

One host from the monitoring image (Debian's prometheus and prometheus-alertmanager preinstalled, not
started) with its own SSH key and container prefix, removed at the end. A small HTTP server on the
podman bridge's gateway plays two parts: a scrape target (``/metrics``) given through
``monitoring_targets``, and the webhook receiver (``POST /alerts``) Alertmanager must deliver to.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from devenv.podman_hosts import ensure_default_bridge
from modules.ansible import runner
from tests.infra.support import Lab

pytestmark = pytest.mark.services

RULES_DIR = runner.ANSIBLE_DIR / "roles" / "monitoring" / "files" / "rules"
STACK = "montest"
PROMETHEUS = "http://127.0.0.1:9090"
ALERTMANAGER = "http://127.0.0.1:9093"
# Run inside the host: GET (or POST a JSON body to) a URL, print the answer.
FETCH = (
    "import sys, urllib.request as u\n"
    "body = sys.argv[2].encode() if len(sys.argv) > 2 else None\n"
    "request = u.Request(sys.argv[1], data=body, headers={'Content-Type': 'application/json'})\n"
    "print(u.urlopen(request, timeout=10).read().decode())\n"
)


class Receiver(ThreadingHTTPServer):
    """Webhook sink and scrape target in one: keeps every POSTed payload, serves a tiny /metrics."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int]):
        super().__init__(address, _Handler)
        self.payloads: list[dict] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def wait_for(self, predicate, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [p for p in self.payloads if predicate(p)]
            if found:
                return found[0]
            time.sleep(0.5)
        raise AssertionError(f"no matching webhook payload within {timeout:.0f} s (got {len(self.payloads)})")


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.payloads.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def do_GET(self):
        text = b'penguinmails_queue_ready{queue="send",priority="high"} 0\n'
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def receiver():
    gateway = ensure_default_bridge()
    if not gateway:
        pytest.fail("podman's default bridge has no gateway address (run tools/configure-podman.sh)")
    server = Receiver((gateway, 0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def converged(tmp_path_factory, receiver):
    """A monitoring host converged twice (the second run must change nothing)."""
    folder = tmp_path_factory.mktemp("ansible-monitoring")
    lab = Lab(folder, kind="monitoring")
    try:
        host = lab.create("mon-1", "mon-1.penguinmails.test")
        gateway = receiver.server_address[0]
        password = secrets.token_urlsafe(24)
        plain = {
            "monitoring_stack": STACK,
            "monitoring_scrape_interval": "5s",
            "monitoring_webhook_url": f"{receiver.url}/alerts",
            "monitoring_email_to": "oncall@penguinmails.test",
            "monitoring_email_from": "alerts@penguinmails.test",
            # Nothing listens there: email notifications fail, which must not hold up the webhook.
            "monitoring_smarthost": f"{gateway}:2587",
            "monitoring_smarthost_username": "alerts@penguinmails.test",
            "monitoring_group_wait": "1s",
            "monitoring_group_interval": "5s",
            "monitoring_targets": {
                "penguinmails": [
                    {"targets": [f"{gateway}:{receiver.server_address[1]}"], "labels": {"component": "queue"}}
                ],
                "node": [
                    {
                        "targets": [f"{host['ip']}:9100"],
                        "labels": {"component": "fleet/mx-1", "node": "mx-1", "ip": host["ip"]},
                    }
                ],
            },
        }
        secret = {"monitoring_smarthost_password": password}
        text = lab.inventory(group="monitoring", playbook="monitoring.yml")

        def converge(**overrides) -> runner.PlaybookRun:
            started = time.monotonic()
            run = runner.run_playbook(
                "monitoring.yml",
                text,
                stack=lab.prefix,
                extra_vars={**plain, **overrides},
                secret_vars=secret,
            )
            run.wall = time.monotonic() - started
            return run

        runs = [converge(), converge()]
        yield {
            "lab": lab,
            "host": host,
            "plain": plain,
            "password": password,
            "runs": runs,
            "converge": converge,
            "folder": folder,
        }
    finally:
        lab.close()


def _exec(converged, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    name = converged["lab"].podman.container_name("mon-1")
    return subprocess.run(
        ["podman", "exec", name, *command], capture_output=True, text=True, timeout=60, check=check
    )


def _api(converged, url: str, body: dict | list | None = None):
    args = [url] if body is None else [url, json.dumps(body)]
    out = _exec(converged, "python3", "-c", FETCH, *args).stdout
    return json.loads(out) if out.strip().startswith(("{", "[")) else out


def _rule_names(converged) -> set[str]:
    groups = _api(converged, f"{PROMETHEUS}/api/v1/rules")["data"]["groups"]
    return {rule["name"] for group in groups for rule in group["rules"]}


def _repo_alerts(folder: Path = RULES_DIR) -> set[str]:
    names = set()
    for path in folder.glob("*.rules.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {rule["alert"] for rule in group["rules"] if "alert" in rule}
    return names


def _pid(converged, daemon: str) -> str:
    return _exec(converged, "cat", f"/run/prometheus/{daemon}.pid").stdout.strip()


def _metric(converged, name: str) -> float:
    text = _api(converged, f"{PROMETHEUS}/metrics")
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith(name + " ")))


def _wait(check, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout:.0f} s")
        time.sleep(1)


def test_first_converge_changes_the_host_and_second_changes_nothing(converged):
    first, second = converged["runs"]
    assert first.hosts["mon-1"].changed >= 5
    assert first.hosts["mon-1"].failed == 0
    assert second.host_results()["mon-1"]["changed"] == 0
    assert second.host_results()["mon-1"]["failed"] == 0
    assert second.host_results()["mon-1"]["ok"] > 10


def test_web_uis_listen_on_loopback_only_and_the_cluster_port_is_off(converged):
    assert _api(converged, f"{PROMETHEUS}/-/ready").strip()
    assert _api(converged, f"{ALERTMANAGER}/-/ready").strip()
    listening = _exec(converged, "ss", "-Htln").stdout.split("\n")
    local = {line.split()[3] for line in listening if line.strip()}
    assert {"127.0.0.1:9090", "127.0.0.1:9093"} <= local
    assert not [address for address in local if address.endswith((":9090", ":9093", ":9094"))
                and not address.startswith("127.0.0.1:")]  # fmt: skip
    with pytest.raises(OSError):
        socket.create_connection((converged["host"]["ip"], 9090), timeout=3).close()


def test_prometheus_loads_every_rule_of_the_repository(converged):
    assert _rule_names(converged) == _repo_alerts()
    installed = set(_exec(converged, "ls", "/etc/prometheus/rules").stdout.split())
    assert installed == {p.name for p in RULES_DIR.glob("*.rules.yml")}


def test_targets_given_in_monitoring_targets_are_scraped_with_their_labels(converged):
    def targets():
        active = _api(converged, f"{PROMETHEUS}/api/v1/targets")["data"]["activeTargets"]
        return {t["labels"]["job"]: t for t in active}

    found = _wait(
        lambda: (t := targets()) and t.get("penguinmails", {}).get("health") == "up" and t,
        what="the penguinmails target is up",
    )
    queue = found["penguinmails"]["labels"]
    assert queue["stack"] == STACK and queue["component"] == "queue"
    node = found["node"]["labels"]
    assert node["component"] == "fleet/mx-1" and node["node"] == "mx-1" and node["stack"] == STACK
    # The host's own Prometheus and Alertmanager, added by the role.
    assert found["prometheus"]["labels"]["component"] == "monitoring"
    assert found["alertmanager"]["health"] in ("up", "unknown")
    files = _exec(converged, "ls", "/etc/prometheus/file_sd/penguinmails", "/etc/prometheus/file_sd/redis")
    assert f"{STACK}.json" in files.stdout.split()


def test_alertmanager_delivers_an_alert_to_the_webhook(converged, receiver):
    token = secrets.token_hex(6)
    labels = {"alertname": "MonitoringRoleTest", "stack": STACK, "component": "monitoring",
              "severity": "ticket", "covers": "alertmanager", "token": token}  # fmt: skip
    _api(converged, f"{ALERTMANAGER}/api/v2/alerts", [{"labels": labels, "annotations": {"summary": "test"}}])
    payload = receiver.wait_for(
        lambda p: any(a["labels"].get("token") == token for a in p.get("alerts", [])), timeout=60
    )
    assert payload["receiver"] == "penguinmails"
    assert payload["groupLabels"] == {
        "alertname": "MonitoringRoleTest",
        "stack": STACK,
        "component": "monitoring",
    }
    assert payload["status"] == "firing"


def test_alertmanager_config_is_private_and_holds_the_smarthost_login(converged):
    stat = _exec(converged, "stat", "-c", "%a %U %G", "/etc/prometheus/alertmanager.yml").stdout.split()
    assert stat == ["640", "root", "prometheus"]
    config = yaml.safe_load(_exec(converged, "cat", "/etc/prometheus/alertmanager.yml").stdout)
    assert config["global"]["smtp_auth_password"] == converged["password"]
    assert config["global"]["smtp_smarthost"] == converged["plain"]["monitoring_smarthost"]
    assert config["route"]["group_by"] == ["alertname", "stack", "component"]
    assert _exec(converged, "amtool", "check-config", "/etc/prometheus/alertmanager.yml").returncode == 0


def test_runner_output_and_events_hold_no_password(converged):
    folder = runner.state_dir() / "artifacts" / converged["lab"].prefix
    texts = [p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()]
    stdout = Path(converged["runs"][0].artifact_dir, "stdout").read_text()
    assert "Ensure alertmanager.yml routes every alert to the webhook and email." in stdout
    assert texts
    for text in texts:
        assert converged["password"] not in text


def test_changed_rules_and_targets_reload_prometheus_without_a_restart(converged, tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules, ignore=shutil.ignore_patterns("tests"))
    (rules / "extra.rules.yml").write_text(
        "groups:\n  - name: extra\n    rules:\n      - alert: ExtraQuiet\n        expr: vector(0) > 1\n"
        "        labels: {severity: ticket, covers: prometheus}\n"
    )
    targets = {
        **converged["plain"]["monitoring_targets"],
        "redis": [{"targets": ["127.0.0.1:9121"], "labels": {"component": "redis"}}],
    }
    pid, reloaded = (
        _pid(converged, "prometheus"),
        _metric(converged, "prometheus_config_last_reload_success_timestamp_seconds"),
    )
    run = converged["converge"](monitoring_rules_dir=str(rules), monitoring_targets=targets)
    assert run.hosts["mon-1"].changed >= 2  # the rules file, the target file, the reload
    _wait(lambda: "ExtraQuiet" in _rule_names(converged), what="the new rule is loaded")
    _wait(
        lambda: any(
            t["labels"]["job"] == "redis"
            for t in _api(converged, f"{PROMETHEUS}/api/v1/targets")["data"]["activeTargets"]
        ),
        what="the new target is listed",
    )
    assert _pid(converged, "prometheus") == pid
    assert _metric(converged, "prometheus_config_last_reload_success_timestamp_seconds") > reloaded


def test_a_bad_rules_file_is_refused_before_anything_is_reloaded(converged, tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules, ignore=shutil.ignore_patterns("tests"))
    (rules / "broken.rules.yml").write_text(
        "groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: up == == 0\n"
    )
    before = _rule_names(converged)
    pid = _pid(converged, "prometheus")
    reloaded = _metric(converged, "prometheus_config_last_reload_success_timestamp_seconds")
    with pytest.raises(runner.AnsibleRunFailed) as failed:
        converged["converge"](monitoring_rules_dir=str(rules))
    assert "Ensure the alert rules are installed, each checked by promtool first." in str(failed.value)
    assert "broken.rules.yml" not in _exec(converged, "ls", "/etc/prometheus/rules").stdout.split()
    time.sleep(2)
    assert _rule_names(converged) == before
    assert _pid(converged, "prometheus") == pid
    assert _metric(converged, "prometheus_config_last_reload_success_timestamp_seconds") == reloaded
