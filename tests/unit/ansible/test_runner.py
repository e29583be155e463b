"""Inventory, hashes, results and failures of modules.ansible.runner (no hosts, no ansible-playbook)."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from modules.ansible import runner
from modules.errors import ValidationError

HOSTS = [
    {"name": "mx-01", "fqdn": "mx-01.fleet.example.net", "ip": "203.0.113.10", "service_id": 11},
    {"name": "mx-02", "fqdn": None, "ip": "203.0.113.11", "service_id": 12},
]


def test_inventory_puts_hosts_in_the_playbook_group_with_connection_settings(monkeypatch):
    monkeypatch.setenv(runner.SSH_KEY_ENV, "/keys/operator")
    inventory = runner.build_inventory(HOSTS, "mailhosts", group_vars={"common_firewall_enabled": False})
    hosts = inventory["all"]["children"]["mailhosts"]["hosts"]
    assert hosts["mx-01"] == {
        "ansible_host": "203.0.113.10",
        "common_hostname": "mx-01.fleet.example.net",
        "penguinmails_service_id": "11",
    }
    assert hosts["mx-02"]["common_hostname"] == "mx-02"
    top = inventory["all"]["vars"]
    assert top["ansible_user"] == "root" and top["ansible_port"] == 22
    assert top["ansible_ssh_private_key_file"] == "/keys/operator"
    assert "StrictHostKeyChecking=accept-new" in top["ansible_ssh_common_args"]
    assert top["common_firewall_enabled"] is False


def test_inventory_host_key_checking_modes():
    strict = runner.Connection(host_key_checking="strict", known_hosts_file="/etc/pm/known_hosts")
    off = runner.Connection(host_key_checking="off")
    assert strict.ssh_common_args(runner.ANSIBLE_DIR) == (
        "-o StrictHostKeyChecking=yes -o UserKnownHostsFile=/etc/pm/known_hosts"
    )
    assert "UserKnownHostsFile=/dev/null" in off.ssh_common_args(runner.ANSIBLE_DIR)


def test_inventory_collects_every_problem_before_anything_runs():
    bad = [
        {"name": "MX_1", "ip": "300.1.1.1"},
        {"name": "mx-2", "ip": "203.0.113.5", "fqdn": "not a name"},
        {"name": "mx-2", "ip": "203.0.113.5"},
    ]
    with pytest.raises(ValidationError) as caught:
        runner.build_inventory(
            bad,
            "mailhosts",
            host_vars={"mx-9": {}, "mx-2": {"ansible_host": "1.2.3.4"}},
            connection=runner.Connection(port=0, host_key_checking="maybe"),
        )
    text = caught.value.message
    for expected in (
        "hosts[0].name: 'MX_1'",
        "hosts[0].ip: '300.1.1.1' is not an IP address",
        "hosts[1].fqdn: 'not a name'",
        "hosts[2].name: mx-2 is also hosts[1]",
        "hosts[2].ip: 203.0.113.5 is also the address of hosts[1]",
        "host_vars.mx-9: no such host",
        "host_vars.mx-2.ansible_host: set through the hosts and connection settings",
        "connection.port: 0",
        "connection.host_key_checking: 'maybe'",
    ):
        assert expected in text
    assert caught.value.message.startswith("Ansible inventory: 9 problems")


def test_rendered_inventory_is_stable_and_says_how_to_use_it():
    first = runner.render_inventory(runner.build_inventory(HOSTS, "mailhosts"), "dev", "mailhost.yml")
    again = runner.render_inventory(runner.build_inventory(list(HOSTS), "mailhosts"), "dev", "mailhost.yml")
    assert first == again
    assert "ansible-playbook -i inventory/generated-dev.yml playbooks/mailhost.yml" in first
    assert (
        yaml.safe_load(first)["all"]["children"]["mailhosts"]["hosts"]["mx-01"]["ansible_host"]
        == "203.0.113.10"
    )


def test_inventory_file_goes_to_the_git_ignored_name(tmp_path, monkeypatch):
    monkeypatch.setenv(runner.INVENTORY_DIR_ENV, str(tmp_path))
    path = runner.write_inventory("dev", "all: {}\n")
    assert path == tmp_path / "generated-dev.yml" and path.read_text() == "all: {}\n"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    with pytest.raises(ValidationError):
        runner.inventory_path("../../etc/passwd")


def test_default_inventory_folder_is_git_ignored():
    ignored = (runner.REPO_ROOT / ".gitignore").read_text().splitlines()
    assert "ansible/inventory/generated*" in ignored
    assert runner.inventory_path("dev") == runner.ANSIBLE_DIR / "inventory" / "generated-dev.yml"


def test_content_hash_follows_role_files_and_ignores_bytecode(tmp_path):
    copy = tmp_path / "ansible"
    shutil.copytree(runner.ANSIBLE_DIR, copy, ignore=shutil.ignore_patterns("generated*", "__pycache__"))
    before = runner.content_hash("mailhost.yml", copy)
    assert before == runner.content_hash("mailhost.yml", copy)
    cache = copy / "roles" / "dovecot" / "filter_plugins" / "__pycache__"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "x.cpython-311.pyc").write_bytes(b"\0")
    assert runner.content_hash("mailhost.yml", copy) == before
    defaults = copy / "roles" / "postfix" / "defaults" / "main.yml"
    defaults.write_text(defaults.read_text().replace("postfix_warmup_stage: 1", "postfix_warmup_stage: 2"))
    assert runner.content_hash("mailhost.yml", copy) != before


def test_vars_digest_covers_secrets_and_depends_on_the_salt():
    plain, secret = (
        {"postfix_warmup_stage": 3},
        {"dovecot_users": [{"address": "a@x.test", "password": "pw1"}]},
    )
    digest = runner.vars_digest(plain, secret, "salt-a")
    assert digest == runner.vars_digest(dict(plain), json.loads(json.dumps(secret)), "salt-a")
    assert digest != runner.vars_digest(
        plain, {"dovecot_users": [{"address": "a@x.test", "password": "pw2"}]}, "salt-a"
    )
    assert digest != runner.vars_digest(plain, secret, "salt-b")
    assert "pw1" not in digest


def test_stats_are_turned_around_per_host():
    stats = {
        "ok": {"mx-01": 80, "mx-02": 3},
        "changed": {"mx-01": 2},
        "failures": {"mx-02": 1},
        "dark": {},
        "skipped": {"mx-01": 4},
        "processed": {"mx-01": 1, "mx-02": 1, "mx-03": 1},
    }
    hosts = runner.stats_by_host(stats)
    assert hosts["mx-01"].as_dict() == {"ok": 80, "changed": 2, "failed": 0, "unreachable": 0, "skipped": 4}
    assert hosts["mx-02"].failed == 1
    assert hosts["mx-03"].as_dict()["ok"] == 0


def _event(kind, host, task, **res):
    return {"event": kind, "event_data": {"host": host, "task": task, "res": res}}


def test_failures_name_host_and_task_and_redact_secrets():
    events = [
        _event("runner_on_ok", "mx-01", "Fine."),
        _event("runner_on_failed", "mx-02", "Ensure X.", msg="bad value s3cr3t-value in\nline two"),
        {"event": "runner_on_failed", "event_data": {"host": "mx-01", "task": "T", "ignore_errors": True}},
        _event("runner_on_unreachable", "mx-03", "Gathering Facts", msg="ssh: connect timed out"),
    ]
    failures = runner.failures_from_events(events, secrets=["s3cr3t-value"])
    assert [(f.host, f.task, f.unreachable) for f in failures] == [
        ("mx-02", "Ensure X.", False),
        ("mx-03", "Gathering Facts", True),
    ]
    assert failures[0].message == "bad value *** in line two"
    run = runner.PlaybookRun("failed", 2, 1.0, failures=failures)
    error = runner._failure("dev", "mailhost.yml", run)
    assert error.host == "mx-02" and error.task == "Ensure X."
    assert str(error) == (
        "AnsiblePlaybook[dev]: playbooks/mailhost.yml failed on host mx-02 at task 'Ensure X.': "
        "bad value *** in line two (also failed: mx-03)"
    )


def test_secret_strings_include_each_line_of_a_pem():
    # A PEM-shaped stand-in, not a key: the markers are assembled so no key-looking text is committed.
    marker = "PRIVATE" + " KEY"
    pem = f"-----BEGIN {marker}-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nAAAA\n-----END {marker}-----\n"
    found = runner.secret_strings({"keys": [{"private_key": pem, "selector": "pm1"}], "n": 3})
    assert pem in found and "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" in found
    assert "pm1" not in found  # too short to be worth redacting


def test_command_artifact_keeps_only_our_variables(tmp_path):
    (tmp_path / "command").write_text(
        json.dumps({"command": ["ansible-playbook"], "cwd": "/x", "env": {"PATH": "/bin", "API_KEY": "k"}})
    )
    runner._scrub_command_artifact(tmp_path, {"PATH": "/bin"})
    assert json.loads((tmp_path / "command").read_text())["env"] == {"PATH": "/bin"}


def test_run_refuses_unknown_playbooks_and_bad_variable_names_before_running():
    with pytest.raises(ValidationError) as caught:
        runner.run_playbook(
            "site.yml", "", stack="dev", extra_vars={"Bad-Name": 1}, secret_vars={"ansible_user": "x"}
        )
    text = caught.value.message
    assert "playbook: 'site.yml' must be one of mailhost.yml, mailu.yml" in text
    assert "vars.Bad-Name: not a valid Ansible variable name" in text
    assert "secret_vars.ansible_user: set through the hosts and connection settings" in text


def test_whole_floats_from_pulumi_become_ints_again():
    assert runner.whole_numbers({"a": 25.0, "b": [1.5, 2.0], "c": {"d": True, "e": "3.0"}}) == {
        "a": 25,
        "b": [1.5, 2],
        "c": {"d": True, "e": "3.0"},
    }
    assert type(runner.whole_numbers(25.0)) is int
    assert runner.vars_digest({"x": 25}, {}, "s") == runner.vars_digest({"x": 25.0}, {}, "s")


def test_a_run_without_host_results_is_a_failure():
    killed = runner._failure("dev", "mailhost.yml", runner.PlaybookRun("failed", -1, 0.5, artifact_dir="/a"))
    assert "reported no host results (status failed, rc -1)" in str(killed)
    empty = runner._failure(
        "dev", "mailhost.yml", runner.PlaybookRun("successful", 0, 0.5, artifact_dir="/a")
    )
    assert "reported no host results" in str(empty)
    timeout = runner._failure("dev", "mailhost.yml", runner.PlaybookRun("failed", 254, 1800.0))
    assert "timed out after 1800 s" in str(timeout)
