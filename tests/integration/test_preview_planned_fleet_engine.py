"""`penguinmails preview` of a planned change on a stack with a fleet and mail DNS: one more node and a
changed DMARC policy show as the node's create and the record set's update, the monthly cost rises by the
plan's price from the (simulated) Hostwinds price list, markdown and JSON agree, and the preview orders and
writes nothing."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid

import pytest
from pulumi import automation as auto

from modules.engine import REPO_ROOT, engine_root
from modules.preview import summary as sm
from tests.support.dns import live, private_bind
from tests.support.engine import project_stack
from tests.support.hostwinds import private_simulator

pytestmark = pytest.mark.engine

STACK = "pvfleet"
ZONES = ["penguinmails.test", "acme.test", "18.198.in-addr.arpa"]
QUEUE_USER = f"pm-pvfleet-{uuid.uuid4().hex[:10]}"


def _config(bind, sim, nodes: int, dmarc: str) -> dict:
    return {
        "environment": "dev",
        "redis": {"queue_user": QUEUE_USER, "port": 6390},
        "monitoring": {"enabled": False},
        "postgres": {tier: {"enabled": False} for tier in ("oltp", "content", "analytics", "queue")},
        "hostwinds": {"endpoint": sim.endpoint, "poll_interval_seconds": 0.5, "lost_answer_wait_seconds": 1},
        "fleet": {
            "nodes": nodes,
            "rdns_domain": "fleet.penguinmails.test",
            "ssh_key_names": ["penguinmails-dev-operator"],
        },
        "dns": {
            "ttl": 600,
            "resolvers": [f"{bind.host}:{bind.port}"],
            "zones": [{"name": z, "port": bind.port, "tsig_key_name": bind.key_name} for z in ZONES],
        },
        "tenants": [
            {
                "slug": "acme",
                "domains": [
                    {
                        "name": "acme.test",
                        "dmarc": {"policy": dmarc, "rua": ["mailto:dmarc@penguinmails.test"]},
                    }
                ],
            }
        ],
        "mail": {"reports": {"domain": "penguinmails.test"}},
    }


def _summary(stack: auto.Stack, output_format: str) -> subprocess.CompletedProcess:
    env = {**stack.workspace.env_vars, "PATH": f"{engine_root() / 'bin'}:{stack.workspace.env_vars['PATH']}"}
    return subprocess.run(
        [sys.executable, "-c", "from modules.cli.main import run; run()", "preview", "--stack", STACK,
         "--format", output_format, "--cwd", stack.workspace.work_dir],
        capture_output=True, text=True, env=env, check=False, cwd=REPO_ROOT,
    )  # fmt: skip


def _set(stack: auto.Stack, config: dict) -> None:
    stack.set_all_config(
        {f"penguinmails:{k}": auto.ConfigValue(json.dumps(config[k])) for k in ("fleet", "tenants")},
        path=False,
    )


def test_one_more_node_and_a_stricter_dmarc_policy(tmp_path, devenv_env):
    with (
        private_bind(tmp_path / "bind", ZONES, key_name="pm-pvtest") as bind,
        private_simulator(tmp_path / "sim", build_seconds=0.5) as sim,
    ):
        stack = project_stack(
            tmp_path,
            STACK,
            config=_config(bind, sim, 1, "quarantine"),
            secrets={"tsigSecret": bind.tsig_secret()},
            extra_env=sim.env(),
        )
        try:
            assert stack.up(color="never").summary.result == "succeeded"
            servers = len(sim.instances())
            dmarc_before = live(bind, "acme.test").rrsets[("_dmarc.acme.test", "TXT")].values
            assert "p=quarantine" in " ".join(dmarc_before)
            _set(stack, _config(bind, sim, 2, "reject"))
            planned = _summary(stack, "json")
            assert planned.returncode == sm.CHANGES, planned.stderr
            data = json.loads(planned.stdout)
            ops = {(c["op"], c["type"]) for c in data["changes"]}
            assert ("create", "hostwinds:Vps") in ops, data["changes"]
            dmarc = [c for c in data["changes"] if c["type"] == "dns:RecordSet" and c["op"] == "update"]
            assert dmarc and any("records" in c["changed"] for c in dmarc), data["changes"]
            cost = data["fleet_cost"]
            assert (cost["nodes_before"], cost["nodes_after"]) == (1, 2)
            assert cost["monthly_before"] is not None and cost["monthly_before"] > 0
            assert cost["monthly_delta"] == pytest.approx(
                cost["monthly_before"]
            )  # same plan, twice the fleet
            text = _summary(stack, "markdown")
            assert text.returncode == sm.CHANGES, text.stderr
            assert "Fleet: 1 → 2 nodes" in text.stdout
            assert f"(+{cost['monthly_delta']:,.2f})" in text.stdout
            assert "| create | `hostwinds:Vps`" in text.stdout and "| update | `dns:RecordSet`" in text.stdout
            # The preview ordered no server and published no record.
            assert len(sim.instances()) == servers == 1
            assert live(bind, "acme.test").rrsets[("_dmarc.acme.test", "TXT")].values == dmarc_before
        finally:
            with contextlib.suppress(auto.CommandError):
                stack.destroy(color="never")
            stack.workspace.remove_stack(STACK)
