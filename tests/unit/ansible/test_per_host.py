"""Per-host playbooks: planning, the combined on-call inventory, check-mode refresh and its diff."""

from __future__ import annotations

import pytest
import yaml

from modules.ansible import per_host, resources, runner

HOSTS = [
    {"name": "mx-01", "fqdn": "mx-01.fleet.example.net", "ip": "203.0.113.10"},
    {"name": "mx-02", "fqdn": "mx-02.fleet.example.net", "ip": "203.0.113.11"},
]
PASSWORD = "dovecot-password-7f3a9c1e55d24b8e"


def _news(node: str, **changes):
    props = {
        "stack": "dev",
        "playbook": "mailhost.yml",
        "content_hash": "c1",
        "hosts": per_host.node_entry(HOSTS, node),
        "vars": {"postfix_warmup_stage": 1},
        "secret_vars": {"dovecot_users": [{"address": "postmaster@a.test", "password": PASSWORD}]},
        "host_vars": {node: {"postfix_virtual_domains": ["a.test"]}},
        "group_vars": {},
        "connection": {"host_key_checking": "off"},
        "timeout_seconds": 600,
        "inventory_host": node,
        "refresh_check": True,
    }
    props.update(changes)
    return props


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    monkeypatch.setenv(runner.INVENTORY_DIR_ENV, str(tmp_path))
    calls: list[dict] = []
    answers: dict[str, runner.PlaybookRun] = {}

    def run_playbook(playbook, text, **kwargs):
        calls.append({"playbook": playbook, "inventory": text, **kwargs})
        host = next(iter(yaml.safe_load(text)["all"]["children"]["mailhosts"]["hosts"]))
        if kwargs.get("check") and host in answers:
            return answers[host]
        return runner.PlaybookRun("successful", 0, 1.0, hosts={host: runner.HostStats(ok=5)})

    monkeypatch.setattr(runner, "run_playbook", run_playbook)
    return calls, answers


def test_node_entry_and_host_vars_keep_only_that_node():
    assert per_host.node_entry(HOSTS, "mx-02") == [HOSTS[1]]
    assert per_host.node_entry(HOSTS, "mx-09") == []
    assert per_host.node_host_vars({"mx-01": {"a": 1}, "mx-02": {"b": 2}}, "mx-02") == {"mx-02": {"b": 2}}
    assert per_host.resource_name("platform-mail", "mx-01") == "platform-mail-host-mx-01"


def test_per_host_resources_write_one_combined_inventory_of_all_hosts(fake_run, tmp_path):
    provider = resources.AnsiblePlaybookProvider()
    first = provider.create(_news("mx-01")).outs
    second = provider.create(_news("mx-02")).outs
    combined = tmp_path / "generated-dev.yml"
    assert first["inventory_path"] == second["inventory_path"] == str(combined)
    text = combined.read_text()
    assert (
        text.startswith(runner.COMBINED_HEADER) and "ansible-playbook -i inventory/generated-dev.yml" in text
    )
    hosts = yaml.safe_load(text)["all"]["children"]["mailhosts"]["hosts"]
    assert sorted(hosts) == ["mx-01", "mx-02"] and hosts["mx-02"]["ansible_host"] == "203.0.113.11"
    assert PASSWORD not in text
    # Each run's own inventory holds only its host.
    calls, _ = fake_run
    assert "mx-02" not in calls[0]["inventory"] and "mx-01" not in calls[1]["inventory"]

    provider.delete("id-1", first)
    hosts = yaml.safe_load(combined.read_text())["all"]["children"]["mailhosts"]["hosts"]
    assert sorted(hosts) == ["mx-02"]
    provider.delete("id-2", second)
    assert not combined.exists()


def test_the_old_fleet_wide_delete_leaves_the_per_host_combined_file(fake_run, tmp_path):
    """Migration: the engine creates the per-host resources, then deletes the old fleet-wide one."""
    provider = resources.AnsiblePlaybookProvider()
    old = provider.create(_news("mx-01", hosts=HOSTS, host_vars={}, inventory_host=None, refresh_check=False))
    assert not (tmp_path / "generated-dev.yml").read_text().startswith(runner.COMBINED_HEADER)
    provider.create(_news("mx-01"))
    provider.create(_news("mx-02"))
    provider.delete("old", old.outs)
    hosts = yaml.safe_load((tmp_path / "generated-dev.yml").read_text())["all"]["children"]["mailhosts"]
    assert sorted(hosts["hosts"]) == ["mx-01", "mx-02"]
    # A fleet-wide resource alone still removes its own file on destroy.
    (tmp_path / "generated-prod.yml").write_text(runner.render_inventory({}, "prod", "mailhost.yml"))
    provider.delete("p", {"stack": "prod", "playbook": "mailhost.yml"})
    assert not (tmp_path / "generated-prod.yml").exists()


def test_refresh_records_drift_the_diff_plans_an_update_and_the_next_run_clears_it(fake_run):
    calls, answers = fake_run
    provider = resources.AnsiblePlaybookProvider()
    outs = provider.create(_news("mx-01")).outs
    assert outs["drift"] == [] and outs["secret_vars"]["dovecot_users"][0]["password"] == PASSWORD
    # A converged host: the check run finds nothing, refresh changes nothing, no update is planned.
    read = provider.read("id", outs)
    assert calls[-1]["check"] is True and calls[-1]["secret_vars"] == outs["secret_vars"]
    assert read.outs == outs
    assert provider.diff("id", read.outs, _news("mx-01")).changes is False

    answers["mx-01"] = runner.PlaybookRun(
        "successful",
        0,
        1.0,
        hosts={"mx-01": runner.HostStats(ok=5, changed=1)},
        changes=[{"task": "Render main.cf", "action": "template", "targets": ["/etc/postfix/main.cf"]}],
    )
    drifted = provider.read("id", outs).outs
    assert drifted["drift"] == ["Render main.cf: /etc/postfix/main.cf"]
    assert provider.diff("id", drifted, _news("mx-01")).changes is True
    repaired = provider.update("id", drifted, _news("mx-01")).outs
    assert repaired["drift"] == [] and repaired["run_count"] == 2
    assert calls[-1].get("check") is not True


def test_an_unreachable_host_on_refresh_is_recorded_not_raised(fake_run):
    _, answers = fake_run
    provider = resources.AnsiblePlaybookProvider()
    outs = provider.create(_news("mx-02")).outs
    answers["mx-02"] = runner.PlaybookRun(
        "failed",
        4,
        3.0,
        hosts={"mx-02": runner.HostStats(unreachable=1)},
        failures=[
            runner.Failure("mx-02", "Gathering Facts", "ssh: connect to host port 22: timed out", True)
        ],
    )
    drift = provider.read("id", outs).outs["drift"]
    assert len(drift) == 1 and drift[0].startswith("unreachable: mx-02 did not answer")
    assert provider.diff("id", {**outs, "drift": drift}, _news("mx-02")).changes is True


def test_a_check_that_cannot_start_is_one_redacted_line(monkeypatch, fake_run):
    def broken(*_args, **_kwargs):
        raise runner.AnsibleError(f"worker failed near {PASSWORD}\nTraceback ...")

    provider = resources.AnsiblePlaybookProvider()
    outs = provider.create(_news("mx-01")).outs
    monkeypatch.setattr(runner, "run_playbook", broken)
    drift = provider.read("id", outs).outs["drift"]
    assert len(drift) == 1 and drift[0].startswith("check not run: worker failed near ***")


def test_resources_without_refresh_check_keep_no_secrets_and_read_what_is_stored(fake_run):
    calls, _ = fake_run
    provider = resources.AnsiblePlaybookProvider()
    outs = provider.create(_news("mx-01", refresh_check=False, inventory_host=None)).outs
    assert "secret_vars" not in outs
    assert provider.read("id", outs).outs == outs and len(calls) == 1


@pytest.mark.parametrize("playbook", ["mailhost.yml", "mailu.yml"])
def test_fleet_wide_mail_playbooks_stop_only_past_a_share_of_failed_hosts(playbook):
    plays = yaml.safe_load((runner.ANSIBLE_DIR / "playbooks" / playbook).read_text())
    for play in plays:
        assert play["max_fail_percentage"] == "{{ penguinmails_max_fail_percentage | default(50) }}", play[
            "name"
        ]


@pytest.mark.parametrize(
    ("extra", "survivor_runs"), [([], True), (["-e", "penguinmails_max_fail_percentage=10"], False)]
)
def test_the_mail_playbooks_setting_lets_one_dead_host_of_two_drop_out_and_the_other_continue(
    tmp_path, extra, survivor_runs
):
    """The keyword as mailhost.yml has it, run by ansible-playbook on two local hosts, one failing."""
    import subprocess
    import sys
    from pathlib import Path

    keyword = yaml.safe_load((runner.ANSIBLE_DIR / "playbooks" / "mailhost.yml").read_text())[0]
    play = {
        "name": "Two hosts, one fails.",
        "hosts": "all",
        "gather_facts": False,
        "max_fail_percentage": keyword["max_fail_percentage"],
        "tasks": [
            {
                "name": "Fail on a.",
                "ansible.builtin.fail": {"msg": "dead"},
                "when": "inventory_hostname == 'a'",
            },
            {"name": "Survivor.", "ansible.builtin.debug": {"msg": "survivor {{ inventory_hostname }}"}},
        ],
    }
    (tmp_path / "play.yml").write_text(yaml.safe_dump([play], sort_keys=False))
    (tmp_path / "hosts.yml").write_text(
        yaml.safe_dump({"all": {"vars": {"ansible_connection": "local"}, "hosts": {"a": {}, "b": {}}}})
    )
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "hosts.yml", "play.yml", *extra],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "ANSIBLE_NOCOLOR": "1",
            "HOME": str(tmp_path),
        },
    )
    assert done.returncode != 0  # host a failed either way
    assert ("survivor b" in done.stdout) is survivor_runs, done.stdout[-2000:]
