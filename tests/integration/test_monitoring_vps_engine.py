"""`pulumi up` with ``monitoring.deploy: vps``: the stack orders its monitoring host, converges Prometheus,
Alertmanager and the penguinmails exporter on it, and points the mail hosts at it, through the real
program on a private simulator with podman nodes (a staging or production stack takes the same path).

What is checked: the mail host's exporters are scraped by the monitoring host, whose address alone its
firewall rule opens them to; the mail host's sender routes agent reaches the exporter's routes endpoint on the monitoring host (its success metric,
scraped by that Prometheus through the mail host's node exporter); a stopped Postfix reaches the webhook
as PostfixDown from the monitoring host's own Alertmanager, and by email through the node's own submission
service once Postfix is back; a second preview plans nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pulumi import automation as auto

from devenv.podman_hosts import PodmanHosts, ensure_default_bridge
from tests.support.dns import private_bind, provider_env
from tests.support.engine import project_stack
from tests.support.hostwinds import hostwinds_section, private_simulator

pytestmark = [pytest.mark.engine, pytest.mark.services]

ZONE = "pmmon.test"
ASK = "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=10).read().decode())"


class Sink(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address):
        super().__init__(address, _Handler)
        self.payloads: list[dict] = []

    def alerts(self) -> list[str]:
        return [a["labels"].get("alertname") for p in list(self.payloads) for a in p.get("alerts", [])]


class _Handler(BaseHTTPRequestHandler):
    server: Sink

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.payloads.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def _config(bind, sim, webhook: str) -> dict:
    return {
        "environment": "dev",
        "redis": {"queue_user": f"pm-mon-{uuid.uuid4().hex[:10]}", "port": 6390},
        "postgres": {tier: {"enabled": False} for tier in ("oltp", "content", "analytics", "queue")},
        "hostwinds": hostwinds_section(sim),
        "fleet": {"nodes": 1, "rdns_domain": f"fleet.{ZONE}", "ssh_key_names": ["penguinmails-dev-operator"]},
        "dns": {
            "ttl": 600,
            "resolvers": [f"{bind.host}:{bind.port}"],
            "zones": [{"name": ZONE, "port": bind.port, "tsig_key_name": bind.key_name}],
        },
        "tenants": [{"slug": "acme", "domains": [{"name": f"acme.{ZONE}"}]}],
        "monitoring": {
            "deploy": "vps",
            "vps": {
                "ssh_key_names": ["penguinmails-dev-operator"],
                "rdns_domain": f"mon.{ZONE}",
                "webhook_url": webhook,
                # The platform's own mail path: submission on the node that sends for acme, to its mailbox.
                "email_to": [f"postmaster@acme.{ZONE}"],
                "email_from": f"alerts@acme.{ZONE}",
            },
        },
    }


def _in(container: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", "exec", container, *argv], capture_output=True, text=True, check=check)


def _query(container: str, expr: str) -> list[dict]:
    url = "http://127.0.0.1:9090/api/v1/query?query=" + urllib.request.quote(expr)
    done = _in(container, "python3", "-c", ASK, url)
    return json.loads(done.stdout)["data"]["result"]


def _wait(what: str, probe, timeout: float):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(3)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


def test_up_orders_and_converges_the_monitoring_host(tmp_path, devenv_env, monkeypatch):
    prefix = f"pm-mon{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("PENGUINMAILS_PODMAN_IMAGE_KIND", "mailhost")  # read by the simulator's podman backend
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    gateway = ensure_default_bridge()
    assert gateway, "podman's default bridge has no gateway address (run tools/configure-podman.sh)"
    sink = Sink((gateway, 0))
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    webhook = f"http://{gateway}:{sink.server_address[1]}/alerts"
    try:
        with (
            private_bind(tmp_path / "bind", [ZONE], key_name="pm-mon") as bind,
            private_simulator(tmp_path / "sim", backend="podman", podman_prefix=prefix) as sim,
        ):
            operator_key, _ = sim.service.operator_key()
            stack = project_stack(
                tmp_path,
                "dev",
                config=_config(bind, sim, webhook),
                secrets={"tsigSecret": bind.tsig_secret()},
                extra_env={
                    **sim.env(),
                    **provider_env(bind),
                    "PENGUINMAILS_FLEET_SSH_PRIVATE_KEY": str(operator_key),
                    "PENGUINMAILS_ANSIBLE_INVENTORY_DIR": str(tmp_path / "inventory"),
                    "PENGUINMAILS_ANSIBLE_STATE_DIR": str(tmp_path / "ansible-state"),
                },
            )
            try:
                _exercise(stack, prefix, sink)
            finally:
                with contextlib.suppress(auto.CommandError):
                    stack.destroy(color="never")
            stack.workspace.remove_stack("dev")
    finally:
        sink.shutdown()
        sink.server_close()
        PodmanHosts(prefix).clear()


def _exercise(stack, prefix: str, sink: Sink) -> None:
    started = time.monotonic()
    up = stack.up(color="never")
    assert up.summary.result == "succeeded"
    print(f"up with a monitoring VPS: {time.monotonic() - started:.0f} s")
    outputs = stack.outputs()
    mon_ip = outputs["monitoring_host"].value
    mail = outputs["fleet_nodes"].value[0]
    assert [r["failed"] for r in outputs["monitoring_host_results"].value.values()] == [0]
    containers = {ip: name for name, ip in PodmanHosts(prefix).list().items()}
    mon, mx = containers[mon_ip], containers[mail["ip"]]
    assert mon != mx

    # The exporter's config holds passwords and the routes token: 0600, its own user's.
    mode = _in(mon, "stat", "-c", "%a %U", "/etc/penguinmails/exporter.json").stdout.split()
    assert mode == ["600", "penguinmails-exporter"]

    # Prometheus on the monitoring host scrapes the mail host's exporters and its own exporter.
    def targets_up():
        found = {(r["metric"]["job"], r["metric"].get("instance")) for r in _query(mon, "up == 1")}
        wanted = {("node", f"{mail['ip']}:9100"), ("postfix", f"{mail['ip']}:9154")}
        return wanted <= found and any(job == "penguinmails" for job, _ in found) and found

    _wait("the mail host's exporters up on the monitoring host's Prometheus", targets_up, 120)

    # The mail hosts' firewall opens the exporters to the monitoring host's address only (dev containers
    # run without nftables; tests/integration/test_ansible_monitoring_agent.py attacks that rule).
    deployment = stack.export_stack().deployment
    mail_playbook = next(
        r
        for r in deployment["resources"]
        if "penguinmails-mail-host-" in r["urn"]  # one per node
    )
    assert mail_playbook["inputs"]["vars"]["monitoring_agent_allowed_sources"] == [mon_ip]

    # The mail host's agent has answers from the routes endpoint on the monitoring host.
    _wait(
        "the sender routes agent's success, scraped by the monitoring host",
        lambda: _query(mon, "penguinmails_sender_routes_last_success_timestamp_seconds > 0"),
        180,
    )

    # Nothing changed: the next preview plans nothing.
    preview = stack.preview(color="never", expect_no_changes=True)
    assert set(preview.change_summary) == {"same"}

    # A stopped Postfix on the mail host reaches the webhook from the monitoring host's Alertmanager.
    _in(mx, "postfix", "stop")
    stopped = time.monotonic()
    _wait("PostfixDown at the webhook", lambda: "PostfixDown" in sink.alerts(), 240)
    print(f"Postfix stopped → PostfixDown at the webhook: {time.monotonic() - stopped:.0f} s")

    # By email too, once the mail path is back: Alertmanager logs in as alerts@ at the node's submission
    # port (TLS checked against the certificate pinned at converge), Postfix delivers to the mailbox.
    _in(mx, "postfix", "start")
    restarted = time.monotonic()
    maildir = f"/var/vmail/acme.{ZONE}/postmaster/Maildir"

    def alert_mail():
        found = _in(
            mx, "sh", "-c", f"grep -rl 'PostfixDown' {maildir}/new {maildir}/cur 2>/dev/null", check=False
        )
        return found.stdout.split()

    delivered = _wait("the PostfixDown alert mail in postmaster's mailbox", alert_mail, 300)
    print(f"Postfix back → alert mail in the mailbox: {time.monotonic() - restarted:.0f} s")
    message = _in(mx, "cat", delivered[0]).stdout
    assert f"From: alerts@acme.{ZONE}" in message or f"<alerts@acme.{ZONE}>" in message
