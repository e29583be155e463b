"""`pulumi up` of the whole project converges the fleet: the dev stack's wiring, on a private copy.

The real program (stack named ``dev``, as ``make up`` runs it) in an isolated backend, with a private
Hostwinds simulator whose podman nodes use the preinstalled mailhost image, and a private BIND. The up
creates the node, publishes DNS with the DKIM key, and converges the node with the mail roles; the key
installed on the host is the one published in DNS. A second preview plans nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import testinfra
from pulumi import automation as auto

from devenv.alert_sink import AlertSinkService
from devenv.bind import free_port
from devenv.podman_hosts import PodmanHosts
from devenv.prometheus import RULES_GLOB, AlertmanagerService, PrometheusService
from modules.dns.lookup import ServerLookup
from modules.monitoring.coverage import components_from_state, coverage
from tests.support.dns import private_bind, provider_env
from tests.support.engine import project_stack
from tests.support.hostwinds import hostwinds_section, private_simulator

pytestmark = [pytest.mark.engine, pytest.mark.services]

ZONE = "pmans.test"


def _config(bind, sim) -> dict:
    return {
        "environment": "dev",
        "redis": {"queue_user": f"pm-ans-{uuid.uuid4().hex[:10]}", "port": 6390},
        "postgres": {tier: {"enabled": False} for tier in ("oltp", "content", "analytics", "queue")},
        "hostwinds": hostwinds_section(sim),
        "fleet": {"nodes": 1, "rdns_domain": f"fleet.{ZONE}", "ssh_key_names": ["penguinmails-dev-operator"]},
        "dns": {
            "ttl": 600,
            "resolvers": [f"{bind.host}:{bind.port}"],
            "zones": [{"name": ZONE, "port": bind.port, "tsig_key_name": bind.key_name}],
        },
        "tenants": [{"slug": "acme", "domains": [{"name": f"acme.{ZONE}", "dkim_selector": "pm1"}]}],
        "mail": {"warmup_stage": 3},
    }


def test_up_converges_the_dev_fleet_with_the_published_dkim_key(tmp_path, devenv_env, monkeypatch):
    prefix = f"pm-ansp{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("PENGUINMAILS_PODMAN_IMAGE_KIND", "mailhost")  # read by the simulator's podman backend
    # testinfra's ansible backend runs ansible-inventory: the venv's.
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    inventory_dir = tmp_path / "inventory"
    try:
        with (
            private_bind(tmp_path / "bind", [ZONE], key_name="pm-ans") as bind,
            private_simulator(tmp_path / "sim", backend="podman", podman_prefix=prefix) as sim,
        ):
            operator_key, _ = sim.service.operator_key()
            stack = project_stack(
                tmp_path,
                "dev",
                config=_config(bind, sim),
                secrets={"tsigSecret": bind.tsig_secret()},
                extra_env={
                    **sim.env(),
                    **provider_env(bind),
                    "PENGUINMAILS_FLEET_SSH_PRIVATE_KEY": str(operator_key),
                    "PENGUINMAILS_ANSIBLE_INVENTORY_DIR": str(inventory_dir),
                    # Facts and artifacts of this "dev" stack stay apart from the real dev stack's.
                    "PENGUINMAILS_ANSIBLE_STATE_DIR": str(tmp_path / "ansible-state"),
                },
            )
            try:
                _exercise(stack, bind, inventory_dir)
                _monitored(stack, tmp_path, inventory_dir)
            finally:
                with contextlib.suppress(auto.CommandError):
                    stack.destroy(color="never")
            assert not (inventory_dir / "generated-dev.yml").exists()
            stack.workspace.remove_stack("dev")
    finally:
        PodmanHosts(prefix).clear()


def _exercise(stack, bind, inventory_dir):
    up = stack.up(color="never")
    assert up.summary.result == "succeeded"
    deployment = stack.export_stack().deployment
    playbooks = [r for r in deployment["resources"] if r["type"] == "pulumi-python:dynamic/ansible:Playbook"]
    assert len(playbooks) == 1
    outputs = playbooks[0]["outputs"]
    results = outputs["host_results"]["mx-01"]
    assert results["failed"] == 0 and results["unreachable"] == 0 and results["changed"] > 10
    assert outputs["run_count"] == 1 and outputs["playbook"] == "mailhost.yml"

    inventory = inventory_dir / "generated-dev.yml"
    assert inventory.exists()
    host = testinfra.get_host("ansible://mx-01", ansible_inventory=str(inventory))
    assert host.socket("tcp://0.0.0.0:25").is_listening and host.socket("tcp://0.0.0.0:993").is_listening
    # Warm-up stage 3 is still in the first band of the plan: one delivery a minute per destination.
    assert host.run("postconf -h smtp-main_destination_rate_delay").stdout.strip() == "60s"
    on_host = host.run(
        f"openssl pkey -in /etc/opendkim/keys/acme.{ZONE}/pm1.private -pubout -outform DER | base64 -w0"
    ).stdout.strip()
    answer = ServerLookup(bind.host, bind.port, timeout=5)(f"pm1._domainkey.acme.{ZONE}", "TXT")
    published = "".join(answer.values)
    assert on_host and f"p={on_host}" in published.replace(" ", "")

    # Nothing changed: the next preview plans no update, so no host is touched again.
    preview = stack.preview(color="never", expect_no_changes=True)
    assert set(preview.change_summary) == {"same"}


def _monitored(stack, tmp_path, inventory_dir):
    """The same up made the node's scrape targets: a Prometheus reading them (with the checkout's rules)
    finds the node's exporters up, and a stopped Postfix reaches the webhook as PostfixDown."""
    root = tmp_path / "monitoring"  # project_stack points the stack's targets at <tmp>/prometheus-targets
    (root / "prometheus").mkdir(parents=True)
    (root / "prometheus" / "targets").symlink_to(tmp_path / "prometheus-targets")
    sink = AlertSinkService(root=root, port=free_port())
    alertmanager = AlertmanagerService(root=root, port=free_port(), sink_port=sink.port)
    prometheus = PrometheusService(
        root=root, port=free_port(), alertmanager_port=alertmanager.port, rules=RULES_GLOB
    )
    services = [sink, alertmanager, prometheus]
    try:
        for service in services:
            service.start()
        url = f"http://{prometheus.address}"
        resources = stack.export_stack().deployment["resources"]
        fleet = [c for c in components_from_state(resources) if c.id.startswith("fleet/")]
        assert [c.id for c in fleet] == ["fleet/mx-01"]
        deadline = time.monotonic() + 90
        while True:
            rows = coverage(fleet, "dev", url)
            if all(row.ok for row in rows) or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert all(row.ok for row in rows), [(r.component, r.job, r.gap(), r.targets) for r in rows]

        host = testinfra.get_host(
            "ansible://mx-01", ansible_inventory=str(inventory_dir / "generated-dev.yml")
        )
        stopped = time.monotonic()
        assert host.run("postfix stop").rc == 0
        alert = None
        while alert is None and time.monotonic() - stopped < 120:  # the bound for this alert
            with urllib.request.urlopen(f"http://{sink.address}/alerts", timeout=5) as answer:
                for payload in json.load(answer):
                    for item in payload.get("alerts", []):
                        labels = item.get("labels", {})
                        if labels.get("alertname") == "PostfixDown" and item.get("status") == "firing":
                            alert = labels
            time.sleep(2)
        assert alert is not None, "PostfixDown did not reach the webhook within 2 minutes of `postfix stop`"
        assert alert["component"] == "fleet/mx-01" and alert["stack"] == "dev" and alert["severity"] == "page"
        print(f"PostfixDown at the webhook {time.monotonic() - stopped:.0f} s after postfix stop")
    finally:
        for service in reversed(services):
            service.stop()
