"""The audit report from a recorded export: every section, the plaintext-secret scan, RLS gaps, the ledger."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modules.audit import markdown, report
from modules.audit.secrets_scan import SECRET_SIG, SECRET_SIG_VALUE, scan_deployment
from modules.postgres import migrations as mig

REPO = Path(__file__).resolve().parents[3]
STACK_URN = "urn:pulumi:audit::penguinmails::pulumi:pulumi:Stack::penguinmails-audit"
PLATFORM_URN = "urn:pulumi:audit::penguinmails::penguinmails:platform:Platform::penguinmails"
TIER_URN = f"{PLATFORM_URN}$penguinmails:postgres:Tier::penguinmails-postgres-oltp"
PLANTED = "hunter2-plaintext-Zq9"
# A PEM block of no key at all, put together here so no private-key block sits in the repository.
PEM_LABEL = " ".join(("PRIVATE", "KEY"))  # a value the scan must find and the report must never print


def secret() -> dict:
    return {SECRET_SIG: SECRET_SIG_VALUE, "ciphertext": "v1:abc:def"}


def ledger() -> dict[str, str]:
    return mig.manifest(mig.load_dir(REPO / "schemas" / "oltp"))


def recorded_export() -> dict:
    """The shape `pulumi stack export` writes, with one resource of each kind the report reads."""
    covered = {"enabled": True, "forced": True, "policies": ["tenant_access", "tenant_fence"], "fenced": True}
    resources = [
        {"urn": STACK_URN, "type": "pulumi:pulumi:Stack", "custom": False, "outputs": {"url": secret()}},
        {"urn": PLATFORM_URN, "type": "penguinmails:platform:Platform", "custom": False, "parent": STACK_URN},
        {"urn": TIER_URN, "type": "penguinmails:postgres:Tier", "custom": False, "parent": PLATFORM_URN},
        {
            "urn": f"{TIER_URN}$pulumi-python:dynamic/postgres:SchemaMigrations::penguinmails-postgres-oltp-migrations",
            "type": "pulumi-python:dynamic/postgres:SchemaMigrations",
            "custom": True,
            "parent": TIER_URN,
            "modified": "2026-11-30T10:00:00.123456789Z",
            "outputs": {
                "tier": "oltp",
                "database": "pm_audit_oltp",
                "directory": "schemas/oltp",
                "migrations": ledger(),
                "drift": [],
                "rls_coverage": {"app.leads": covered, "app.campaigns": covered},
            },
        },
        {
            "urn": f"{TIER_URN}$pulumi-python:dynamic/postgres:Role::penguinmails-postgres-oltp-app",
            "type": "pulumi-python:dynamic/postgres:Role",
            "custom": True,
            "parent": TIER_URN,
            "inputs": {"role": "pm_audit_oltp_app", "password": secret()},
            "outputs": {"role": "pm_audit_oltp_app", "tier": "oltp", "password": secret(), "drift": []},
        },
        {
            "urn": f"{PLATFORM_URN}$pulumi-python:dynamic/hostwinds:Vps::mx-01",
            "type": "pulumi-python:dynamic/hostwinds:Vps",
            "custom": True,
            "parent": PLATFORM_URN,
            "outputs": {
                "label": "audit-mx-01-abc",
                "name_base": "audit-mx-01",
                "rdns": "mx-01.fleet.audit.test",
                "service_id": 1001,
                "plan_id": 2,
                "plan_name": "Unmanaged SSD VPS 2 GB",
                "location_id": 1,
                "billing_cycle": "monthly",
                "ordered_at": "2026-11-01T00:00:00Z",
            },
        },
        {
            "urn": f"{PLATFORM_URN}$pulumi-python:dynamic/dns:DkimKey::acme",
            "type": "pulumi-python:dynamic/dns:DkimKey",
            "custom": True,
            "parent": PLATFORM_URN,
            "outputs": {
                "domain": "acme.test",
                "selector": "pm1",
                "bits": 2048,
                "created_at": "2026-11-21T00:00:00+00:00",
                "private_key_pem": secret(),
            },
        },
        {
            "urn": f"{PLATFORM_URN}$pulumi-python:dynamic/dns:RecordSet::acme",
            "type": "pulumi-python:dynamic/dns:RecordSet",
            "custom": True,
            "parent": PLATFORM_URN,
            "modified": "2026-11-29T00:00:00Z",
            "outputs": {
                "records": [
                    {"name": "_dmarc.acme.test", "type": "TXT", "values": ["v=DMARC1; p=none"]},
                    {"name": "acme.test", "type": "MX", "values": ["10 mail.acme.test."]},
                ],
                "drift": ["_dmarc.acme.test TXT: the zone has v=DMARC1; p=reject"],
            },
        },
    ]
    return {
        "version": 3,
        "deployment": {"manifest": {"time": "2026-11-30T10:00:00Z"}, "resources": resources},
    }


HISTORY = [
    {
        "version": 2,
        "kind": "refresh",
        "result": "succeeded",
        "startTime": "2026-11-30T11:00:00.000Z",
        "environment": {"git.author": "Ada", "git.head": "a" * 40, "git.dirty": "false"},
        "resourceChanges": {"same": 8},
    },
    {
        "version": 1,
        "kind": "update",
        "result": "succeeded",
        "startTime": "2026-11-30T10:00:00.000Z",
        "message": "first up",
        "environment": {"git.author": "Grace", "git.head": "b" * 40, "git.dirty": "true"},
        "resourceChanges": {"create": 8},
    },
]
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def build(export: dict, **kwargs) -> dict:
    return report.build(export, HISTORY, stack="audit", repo=REPO, now=NOW, **kwargs)


def test_every_section_is_there_and_reads_the_state():
    data = build(recorded_export(), prices={2: 9.99})
    assert set(data) >= {
        "inventory",
        "secrets",
        "tiers",
        "domains",
        "fleet",
        "history",
        "last_refresh",
        "drift",
        "policy",
    }
    assert data["inventory"]["by_component"]["postgres:Tier penguinmails-postgres-oltp"] == {
        "postgres:Role": 1,
        "postgres:SchemaMigrations": 1,
    }
    assert data["inventory"]["by_tier"]["oltp"] == {"postgres:Role": 1, "postgres:SchemaMigrations": 1}
    assert data["secrets"] == {"findings": [], "encrypted_values": 4}
    oltp = data["tiers"]["oltp"]
    assert oltp["ledger_problems"] == [] and oltp["rls"]["covered"] == 2 and oltp["rls"]["gaps"] == []
    assert data["domains"]["acme.test"]["dkim"][0]["age_days"] == 10.0
    assert data["domains"]["acme.test"]["drift"] == ["_dmarc.acme.test TXT: the zone has v=DMARC1; p=reject"]
    node = data["fleet"]["nodes"][0]
    assert (node["age_days"], node["monthly_cost"], data["fleet"]["monthly_cost"]) == (30.0, 9.99, 9.99)
    assert [h["author"] for h in data["history"]] == ["Ada", "Grace"] and data["history"][1]["dirty"]
    assert data["last_refresh"]["start"] == "2026-11-30T11:00:00.000Z"
    assert [d["urn"].rsplit("::", 1)[-1] for d in data["drift"]] == ["acme"]
    text = markdown.render(data)
    for heading in (
        "## Inventory",
        "## Secrets in the state",
        "## PostgreSQL tiers",
        "## Sending domains",
        "## Fleet",
        "## Changes (stack history)",
        "## Refresh and drift",
        "## Policy",
    ):
        assert heading in text
    assert "Fleet monthly cost: 9.99" in text


def test_offline_report_has_no_cost_it_cannot_know():
    data = build(recorded_export())
    assert data["fleet"]["monthly_cost"] is None and data["fleet"]["nodes"][0]["monthly_cost"] is None


def test_rls_gaps_and_ledger_problems_are_reported():
    export = recorded_export()
    outs = export["deployment"]["resources"][3]["outputs"]
    outs["rls_coverage"]["app.leads"] = {"enabled": True, "forced": False, "policies": [], "fenced": False}
    first = next(iter(outs["migrations"]))
    outs["migrations"][first] = "0" * 64
    last = sorted(outs["migrations"])[-1]
    del outs["migrations"][last]
    outs["migrations"]["9999_gone.sql"] = "1" * 64
    oltp = build(export)["tiers"]["oltp"]
    assert oltp["rls"]["gaps"] == ["app.leads: RLS not forced, no tenant fence policy"]
    assert oltp["rls"]["covered"] == 1
    assert sorted(oltp["ledger_problems"]) == sorted(
        [
            f"{first}: the file differs from what was applied",
            "9999_gone.sql: applied, but not in schemas/oltp",
            f"{last}: in schemas/oltp, not applied",
        ]
    )


@pytest.mark.parametrize(
    ("where", "value", "reason"),
    [
        ("password", PLANTED, "key 'password'"),
        ("notes", f"postgresql://app:{PLANTED}@db:5432/x", "a URL with a password"),
        ("pem", f"-----BEGIN {PEM_LABEL}-----\n{PLANTED}\n-----END {PEM_LABEL}-----", "a PEM private key"),
        ("api_key", PLANTED, "key 'api_key'"),
    ],
)
def test_a_planted_plaintext_secret_is_found_by_place_not_value(where, value, reason):
    export = copy.deepcopy(recorded_export())
    export["deployment"]["resources"][4]["outputs"]["nested"] = {"deeper": [{where: value}]}
    findings = scan_deployment(export["deployment"])
    assert len(findings) == 1
    assert findings[0].path == f"outputs.nested.deeper[0].{where}" and reason in findings[0].reason
    assert PLANTED not in json.dumps(build(export)) and PLANTED not in markdown.render(build(export))


def test_names_of_secrets_that_hold_none_are_not_findings():
    export = recorded_export()
    export["deployment"]["resources"][4]["outputs"].update(
        {"password_file": "/etc/x", "secret_keys": ["a"], "token": "", "ssh_keys": ["ops"], "password": None}
    )
    assert scan_deployment(export["deployment"]) == []


def _cli(tmp_path: Path, export: dict, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    (tmp_path / "history.json").write_text(json.dumps(HISTORY))
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from modules.cli.main import run; run()",
            "audit",
            "--stack",
            "audit",
            "--export",
            str(path),
            "--history",
            str(tmp_path / "history.json"),
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )


def test_cli_exit_codes_on_a_recorded_export(tmp_path):
    export = recorded_export()
    export["deployment"]["resources"][7]["outputs"]["drift"] = []
    clean = _cli(tmp_path, export, "--format", "json")
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["schema_version"] == report.SCHEMA_VERSION
    export["deployment"]["resources"][5]["outputs"]["api_key"] = PLANTED
    dirty = _cli(tmp_path, export)
    assert dirty.returncode == 4 and "## Secrets in the state" in dirty.stdout
    assert PLANTED not in dirty.stdout + dirty.stderr
    # A mandatory policy violation is a finding too: the node without rDNS.
    del export["deployment"]["resources"][5]["outputs"]["api_key"]
    del export["deployment"]["resources"][5]["outputs"]["rdns"]
    unnamed = _cli(tmp_path, export, "--format", "json")
    assert unnamed.returncode == 4, unnamed.stdout
    assert [v["policy"] for v in json.loads(unnamed.stdout)["policy"]["violations"]] == ["fleet-node-rdns"]
    bad = _cli(tmp_path, export, "--format", "yaml")
    assert bad.returncode != 0 and "--format" in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path / "export.json").write_text("{}")
    broken = subprocess.run(
        [
            sys.executable,
            "-c",
            "from modules.cli.main import run; run()",
            "audit",
            "--export",
            str(tmp_path / "export.json"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert broken.returncode != 0 and "no deployment" in broken.stderr


def test_history_numbers_the_file_backends_unversioned_entries():
    recorded = [
        {"version": 0, "kind": "update"},
        {"version": 0, "kind": "refresh"},
        {"version": 0, "kind": "update"},
    ]
    assert [row["version"] for row in report.history(recorded)] == [3, 2, 1]
    versioned = [{"version": 7, "kind": "update"}, {"version": 5, "kind": "update"}]
    assert [row["version"] for row in report.history(versioned)] == [7, 5]
