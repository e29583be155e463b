"""Runbook requests are checked before ansible-runner starts; the catalog matches the playbooks on disk."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from modules.ansible import runner
from modules.cli.main import app
from modules.runbooks import catalog
from modules.runbooks import run as rb

INVENTORY = runner.render_inventory(
    runner.build_inventory(
        [
            {"name": "mx-01", "ip": "10.88.0.5", "fqdn": "mx-01.fleet.test"},
            {"name": "mx-02", "ip": "10.88.0.6"},
        ],
        "mailhosts",
    ),
    "unit",
    "mailhost.yml",
)


def test_every_runbook_has_its_playbook_and_every_playbook_is_listed():
    on_disk = {p.stem for p in catalog.RUNBOOK_DIR.glob("*.yml")}
    assert on_disk == set(catalog.RUNBOOKS)
    for book in catalog.RUNBOOKS.values():
        plays = yaml.safe_load(book.playbook.read_text())
        assert isinstance(plays, list) and plays


def test_left_out_runbooks_are_named_with_the_reason():
    with pytest.raises(catalog.RunbookError, match=r"rotate-dkim.*dkim_selector"):
        catalog.get("rotate-dkim")
    with pytest.raises(catalog.RunbookError, match="runbook list"):
        catalog.get("nope")


def test_extra_vars_parse_yaml_values_and_refuse_bad_names():
    assert catalog.parse_extra_vars(["runbook_host=mx-01", "runbook_ids=[1, 2]", "runbook_all=true"]) == {
        "runbook_host": "mx-01",
        "runbook_ids": [1, 2],
        "runbook_all": True,
    }
    assert catalog.parse_extra_vars(["runbook_to=2026-12-03 15:00:00+00"]) == {
        "runbook_to": "2026-12-03 15:00:00+00"
    }
    assert catalog.parse_extra_vars(['{"runbook_tier": "oltp"}']) == {"runbook_tier": "oltp"}
    with pytest.raises(catalog.RunbookError, match="key=value"):
        catalog.parse_extra_vars(["runbook_host"])
    with pytest.raises(Exception, match="ansible_host"):
        catalog.parse_extra_vars(["ansible_host=1.2.3.4"])


def test_target_host_must_be_one_mail_host_of_the_inventory():
    drain, reconverge = catalog.get("drain"), catalog.get("reconverge")
    assert catalog.target_host(drain, INVENTORY, {"runbook_host": "mx-02"}, None) == "mx-02"
    assert catalog.target_host(reconverge, INVENTORY, {}, "mx-01") == "mx-01"
    with pytest.raises(catalog.RunbookError, match=r"host 'mx-9' is not a mail host .*mx-01, mx-02"):
        catalog.target_host(drain, INVENTORY, {"runbook_host": "mx-9"}, None)
    with pytest.raises(catalog.RunbookError, match="pass -e runbook_host"):
        catalog.target_host(drain, INVENTORY, {}, None)
    with pytest.raises(catalog.RunbookError, match="pass --limit"):
        catalog.target_host(reconverge, INVENTORY, {}, None)
    with pytest.raises(catalog.RunbookError, match="differs"):
        catalog.target_host(drain, INVENTORY, {"runbook_host": "mx-01"}, "mx-02")
    assert catalog.target_host(catalog.get("restore-tier"), INVENTORY, {}, None) is None


def test_controller_runbooks_name_what_is_missing(tmp_path):
    replay, restore = catalog.get("replay-dead-letters"), catalog.get("restore-tier")
    assert catalog.controller_problems(replay, {"runbook_queue": "send"}) == []
    assert catalog.controller_problems(replay, {"runbook_all": True}) == []
    assert any("runbook_queue" in r for r in catalog.controller_problems(replay, {}))
    assert any("uuid" in r for r in catalog.controller_problems(replay, {"runbook_tenant": "acme"}))
    assert any("runbook_ids" in r for r in catalog.controller_problems(replay, {"runbook_ids": "1,2"}))
    good = {"runbook_tier": "oltp", "runbook_target": str(tmp_path / "new")}
    assert catalog.controller_problems(restore, good) == []
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "PG_VERSION").write_text("15\n")
    problems = catalog.controller_problems(restore, {**good, "runbook_target": str(tmp_path / "used")})
    assert problems and "not empty" in problems[0]
    assert any(
        "absolute" in r for r in catalog.controller_problems(restore, {**good, "runbook_target": "rel"})
    )


def test_mail_vars_come_from_the_playbook_resource_that_converges_the_host():
    export = {
        "deployment": {
            "resources": [
                {"type": "pulumi:providers:pulumi-python", "inputs": {}},
                {
                    "type": "pulumi-python:dynamic/ansible:Playbook",
                    "inputs": {
                        "playbook": "mailhost.yml",
                        "hosts": [{"name": "mx-01", "ip": "10.0.0.1"}],
                        "vars": {"postfix_message_size_limit_mb": 25.0},
                        "secret_vars": {
                            "4dabf18193072939515e22adc298bdf9": "1b47061264138c4ac30d75fd1eb44270",
                            "plaintext": json.dumps(
                                {"dovecot_users": [{"address": "a@b.test", "password": "pw"}]}
                            ),
                        },
                    },
                },
            ]
        }
    }
    plain, secret = rb.mail_vars_from_export(export, "mx-01")
    assert plain == {"postfix_message_size_limit_mb": 25}
    assert secret["dovecot_users"][0]["password"] == "pw"
    with pytest.raises(catalog.RunbookError, match=r"mx-02.*pulumi up"):
        rb.mail_vars_from_export(export, "mx-02")


def test_cli_lists_runbooks_and_refuses_a_stack_without_inventory(tmp_path, monkeypatch):
    monkeypatch.setenv(runner.INVENTORY_DIR_ENV, str(tmp_path))
    cli = CliRunner()
    listed = cli.invoke(app, ["runbook", "list"])
    assert listed.exit_code == 0
    for name in catalog.RUNBOOKS:
        assert name in listed.output
    assert "rotate-dkim" in listed.output and "not available" in listed.output
    missing = cli.invoke(app, ["runbook", "drain", "--stack", "nowhere", "-e", "runbook_host=mx-01"])
    assert missing.exit_code != 0
    assert isinstance(missing.exception, catalog.RunbookError)
    assert "generated-nowhere.yml" in missing.exception.message
    (tmp_path / "generated-unit.yml").write_text(INVENTORY)
    unknown = cli.invoke(app, ["runbook", "drain", "--stack", "unit", "-e", "runbook_host=mx-9", "--check"])
    assert isinstance(unknown.exception, catalog.RunbookError)
    assert "'mx-9' is not a mail host" in unknown.exception.message
