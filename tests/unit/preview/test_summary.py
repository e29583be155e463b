"""The preview summary from engine-shaped JSON: replaces first, counts, the fleet's cost, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from modules.preview import summary as sm

REPO = Path(__file__).resolve().parents[3]
P = "urn:pulumi:ci::penguinmails::penguinmails:platform:Platform"
VPS = f"{P}$penguinmails:hostwinds:VpsFleet$pulumi-python:dynamic/hostwinds:Vps::"
RECORDS = f"{P}$penguinmails:dns:MailDns$pulumi-python:dynamic/dns:RecordSet::"
ROLE = f"{P}$penguinmails:postgres:Tier$pulumi-python:dynamic/postgres:Role::"


def vps(name: str, plan: int) -> dict:
    return {"urn": VPS + name, "type": sm.VPS_TYPE, "inputs": {"plan_id": plan}, "outputs": {"plan_id": plan}}


def step(op: str, urn: str, rtype: str, old: dict | None, new: dict | None, **extra) -> dict:
    def state(inputs):
        return None if inputs is None else {"urn": urn, "type": rtype, "inputs": inputs}

    return {"op": op, "urn": urn, "oldState": state(old), "newState": state(new), **extra}


def planned() -> dict:
    """One more node, a changed DMARC policy, a role replaced, one node deleted."""
    return {
        "changeSummary": {"create": 1, "update": 1, "replace": 1, "delete": 1, "same": 20},
        "steps": [
            step("same", f"{P}::x", "penguinmails:platform:Platform", {}, {}),
            step("create", VPS + "mx-03", sm.VPS_TYPE, None, {"plan_id": 2, "name_base": "mx-03"}),
            step("delete", VPS + "mx-02", sm.VPS_TYPE, {"plan_id": 1}, None),
            step(
                "update",
                RECORDS + "acme",
                "pulumi-python:dynamic/dns:RecordSet",
                {"records": [{"name": "_dmarc.acme.test", "values": ["v=DMARC1; p=none"]}], "ttl": 300},
                {"records": [{"name": "_dmarc.acme.test", "values": ["v=DMARC1; p=reject"]}], "ttl": 300},
            ),
            step(
                "replace",
                ROLE + "oltp-app",
                "pulumi-python:dynamic/postgres:Role",
                {"role": "a", "tier": "oltp", "password": "[secret]"},
                {"role": "b", "tier": "oltp", "password": "[secret]"},
                replaceReasons=["role"],
            ),
        ],
    }


CURRENT = [vps("mx-01", 1), vps("mx-02", 1)]
PRICES = {1: 4.99, 2: 9.99}


def test_replaces_and_deletes_come_first_with_their_reasons():
    result = sm.summarize(planned(), stack="ci", current=CURRENT, prices=PRICES)
    assert [(c["op"], c["name"]) for c in result["changes"]] == [
        ("delete", "mx-02"),
        ("replace", "oltp-app"),
        ("update", "acme"),
        ("create", "mx-03"),
    ]
    assert [c["op"] for c in result["destructive"]] == ["delete", "replace"]
    role = next(c for c in result["changes"] if c["name"] == "oltp-app")
    assert role["changed"] == ["role"] and role["tier"] == "oltp" and role["component"] == "postgres:Tier"
    dmarc = next(c for c in result["changes"] if c["name"] == "acme")
    assert dmarc["changed"] == ["records"] and dmarc["component"] == "dns:MailDns"
    assert result["by_component"]["hostwinds:VpsFleet"] == {"create": 1, "delete": 1}
    assert result["by_tier"] == {"oltp": {"replace": 1}}
    assert result["exit_code"] == sm.CHANGES


def test_fleet_cost_before_and_after():
    cost = sm.summarize(planned(), stack="ci", current=CURRENT, prices=PRICES)["fleet_cost"]
    assert (cost["nodes_before"], cost["nodes_after"]) == (2, 2)
    assert (cost["monthly_before"], cost["monthly_after"], cost["monthly_delta"]) == (9.98, 14.98, 5.0)
    unpriced = sm.summarize(planned(), stack="ci", current=CURRENT, prices={1: 4.99})["fleet_cost"]
    assert unpriced["unpriced_plans"] == [2] and unpriced["monthly_after"] is None
    offline = sm.summarize(planned(), stack="ci", current=CURRENT)["fleet_cost"]
    assert offline["monthly_before"] is None and offline["nodes_after"] == 2


def test_markdown_calls_out_destructive_changes_and_the_cost_delta():
    text = sm.markdown(sm.summarize(planned(), stack="ci", current=CURRENT, prices=PRICES))
    assert text.index("**delete**") < text.index("| update |")
    assert "**replace** `postgres:Role` oltp-app (postgres:Tier, oltp): role" in text
    assert "| update | `dns:RecordSet` acme | dns:MailDns |  | records |" in text
    assert "Fleet: 2 → 2 nodes; monthly cost 9.98 → 14.98 (+5.00)." in text
    assert "[secret]" not in text


def test_exit_codes():
    assert sm.summarize({"steps": [step("same", f"{P}::x", "t", {}, {})]}, stack="ci")["exit_code"] == 0
    mandatory = [{"policy": "dmarc-required", "level": "mandatory", "message": "no DMARC"}]
    advisory = [{"policy": "x", "level": "advisory", "message": "hint"}]
    assert sm.summarize(planned(), stack="ci", policy=mandatory)["exit_code"] == sm.POLICY_VIOLATION
    assert sm.summarize(planned(), stack="ci", policy=advisory)["exit_code"] == sm.CHANGES


def test_cli_on_a_recorded_preview(tmp_path):
    path = tmp_path / "preview.json"
    path.write_text(json.dumps(planned()))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from modules.cli.main import run; run()",
            "preview",
            "--stack",
            "ci",
            "--from-json",
            str(path),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == sm.CHANGES, done.stderr
    assert json.loads(done.stdout)["destructive"][0]["name"] == "mx-02"
    path.write_text("not json")
    bad = subprocess.run(
        [
            sys.executable,
            "-c",
            "from modules.cli.main import run; run()",
            "preview",
            "--from-json",
            str(path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert bad.returncode == 1 and "--from-json" in bad.stderr and "Traceback" not in bad.stderr
