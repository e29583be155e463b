"""Policy results from the engine's event log: one entry per rule and resource, mandatory first."""

from __future__ import annotations

import json

from modules.preview import policy as pol
from modules.preview import summary as sm

STACK_URN = "urn:pulumi:ci::penguinmails::pulumi:pulumi:Stack::penguinmails-ci"
VPS_URN = "urn:pulumi:ci::penguinmails::pulumi-python:dynamic/hostwinds:Vps::mx-01"


def event(policy: str, level: str, urn: str, message: str) -> dict:
    return {
        "sequence": 1,
        "policyEvent": {
            "resourceUrn": urn,
            "message": f"Why the rule exists.\n{message}\n",
            "color": "never",
            "policyName": policy,
            "policyPackName": "penguinmails",
            "policyPackVersion": "0.1.0",
            "enforcementLevel": level,
        },
    }


def test_results_read_the_event_log_dedupe_and_put_mandatory_first(tmp_path):
    log = tmp_path / "events.jsonl"
    lines = [
        event("dmarc-policy-none", "advisory", VPS_URN, "acme.test: p=none"),
        {"sequence": 2, "diagnosticEvent": {"message": "noise"}},
        event("fleet-node-rdns", "mandatory", VPS_URN, "fleet node mx-01 has no rDNS"),
        event(
            "fleet-node-rdns", "mandatory", VPS_URN, "fleet node mx-01 has no rDNS"
        ),  # preview + stack pass
        event("fleet-budget", "mandatory", STACK_URN, "the fleet has 3 nodes"),
    ]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n{torn line")
    found = pol.results(pol.read_events(log))
    assert [(e["policy"], e["level"], e["resource"]) for e in found] == [
        ("fleet-budget", "mandatory", "penguinmails-ci"),
        ("fleet-node-rdns", "mandatory", "mx-01"),
        ("dmarc-policy-none", "advisory", "mx-01"),
    ]
    assert found[1]["message"] == "fleet node mx-01 has no rDNS"
    assert found[1]["description"] == "Why the rule exists."
    assert pol.read_events(tmp_path / "missing.jsonl") == []

    summary = sm.summarize({"steps": []}, stack="ci", policy=found)
    assert summary["exit_code"] == sm.POLICY_VIOLATION
    text = sm.markdown(summary)
    assert "**Policy: 2 mandatory violation(s), 1 advisory warning(s)**" in text
    assert "| mandatory | fleet-node-rdns | mx-01 | fleet node mx-01 has no rDNS |" in text
    advisory_only = sm.summarize({"steps": []}, stack="ci", policy=found[2:])
    assert advisory_only["exit_code"] == sm.NO_CHANGES


def test_the_default_pack_and_the_engine_environment(tmp_path):
    assert pol.default_pack(tmp_path) is None
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "PulumiPolicy.yaml").write_text("runtime: penguinmails-policy\n")
    assert pol.default_pack(tmp_path) == (tmp_path / "policies").resolve()
    env = pol.engine_env({"PATH": "/engine/bin"})
    assert env["PULUMI_DEBUG_COMMANDS"] == "true"
    assert env["PATH"].split(":") == ["/engine/bin", str(pol.HOST_DIR)]
    assert (pol.HOST_DIR / pol.HOST_PLUGIN).stat().st_mode & 0o111
    assert pol.is_host_notice(f"warning: using {pol.HOST_PLUGIN} from $PATH at /x/{pol.HOST_PLUGIN}\n")
    assert not pol.is_host_notice("warning: using pulumi-language-python from $PATH at /x")
