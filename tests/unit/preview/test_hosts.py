"""The summary's mail-host section: per host the planned step, its status and the would-change tasks."""

from __future__ import annotations

import json

from modules.preview import hosts
from modules.preview import summary as sm

P = "urn:pulumi:dev::penguinmails::penguinmails:platform:Platform$penguinmails:ansible:MailHosts"
URN = f"{P}$pulumi-python:dynamic/ansible:Playbook::pm-mail-host-"
DRIFT = ["Render main.cf: /etc/postfix/main.cf", "Install the DKIM keys: (hidden: no_log)"]


def _state(node: str, drift: list[str] | None) -> dict:
    outputs = {"inventory_host": node, "secret_vars": "[secret]"}
    if drift is not None:
        outputs["drift"] = drift
    return {
        "urn": URN + node,
        "type": hosts.PLAYBOOK_TYPE,
        "inputs": {"inventory_host": node},
        "outputs": outputs,
    }


def _preview() -> dict:
    """`pulumi preview --refresh --json`: the steps' old state is the refreshed one."""
    return {
        "changeSummary": {"update": 1, "same": 2},
        "steps": [
            {"op": "update", "urn": URN + "mx-01", "oldState": _state("mx-01", DRIFT), "newState": _state("mx-01", None)},
            {"op": "same", "urn": URN + "mx-02", "oldState": _state("mx-02", []), "newState": _state("mx-02", [])},
            {"op": "update", "urn": URN + "mx-03", "oldState": _state("mx-03", ["unreachable: mx-03 did not answer (x)"]),
             "newState": _state("mx-03", None)},
        ],
    }  # fmt: skip


def test_rows_per_host_with_the_refreshed_drift():
    rows = hosts.host_rows(_preview())
    assert [(r["host"], r["op"], r["status"]) for r in rows] == [
        ("mx-01", "update", "drift"),
        ("mx-02", "same", "converged"),
        ("mx-03", "update", "unreachable"),
    ]
    assert rows[0]["drift"] == DRIFT


def test_without_refresh_the_last_refresh_in_the_state_counts():
    preview = {"steps": [{"op": "update", "urn": URN + "mx-01", "oldState": {"type": hosts.PLAYBOOK_TYPE,
               "inputs": {"inventory_host": "mx-01"}, "outputs": {"inventory_host": "mx-01"}}}]}  # fmt: skip
    current = [_state("mx-01", DRIFT), _state("mx-02", [])]
    rows = hosts.host_rows(preview, current)
    assert [(r["host"], r["op"], r["drift"]) for r in rows] == [
        ("mx-01", "update", DRIFT),
        ("mx-02", "same", []),
    ]


def test_other_resources_and_the_fleet_wide_playbook_are_not_host_rows():
    fleet = {"urn": "urn:x::pm-mail-playbook", "type": hosts.PLAYBOOK_TYPE, "outputs": {"host_results": {}}}
    preview = {
        "steps": [
            {"op": "same", "urn": "urn:x::v", "newState": {"type": "pulumi-python:dynamic/hostwinds:Vps"}}
        ]
    }
    assert hosts.host_rows(preview, [fleet]) == []
    assert hosts.markdown_lines([]) == []


def test_summary_and_markdown_carry_the_host_section():
    summary = sm.summarize(_preview(), stack="dev")
    assert [r["host"] for r in summary["hosts"]] == ["mx-01", "mx-02", "mx-03"]
    assert summary["exit_code"] == sm.CHANGES
    text = sm.markdown(summary)
    assert "| mx-01 | update | drift | 2 |" in text and "- Render main.cf: /etc/postfix/main.cf" in text
    assert "| mx-02 | same | converged | 0 |" in text and "[secret]" not in text
    json.dumps(summary)  # JSON for tools


def test_the_refresh_step_is_ignored_the_next_steps_old_state_is_the_refreshed_one():
    """The shape `pulumi preview --refresh --json` (v3.68) gives: a refresh step with the stored states,
    then the update whose old state holds what the refresh read."""
    stale = _state("mx-01", [])
    preview = {
        "steps": [
            {"op": "refresh", "urn": URN + "mx-01", "oldState": stale, "newState": stale},
            {"op": "update", "urn": URN + "mx-01", "oldState": _state("mx-01", DRIFT), "newState": None},
        ]
    }
    rows = hosts.host_rows(preview)
    assert [(r["host"], r["op"], r["status"], r["drift"]) for r in rows] == [
        ("mx-01", "update", "drift", DRIFT)
    ]
