"""AnsiblePlaybookProvider: what makes it re-run, what its outputs keep, and what check refuses."""

from __future__ import annotations

import pulumi
import pytest
import yaml
from pulumi.runtime.rpc import UNKNOWN

from modules.ansible import resources, runner
from tests.support.devenv_vars import DEVENV_VARS, stack_settings

HOSTS = [{"name": "mx-01", "fqdn": "mx-01.fleet.example.net", "ip": "203.0.113.10", "service_id": 1}]
SECRET = "dkim-private-key-material-0123456789"


def _news(**changes):
    props = {
        "stack": "dev",
        "playbook": "mailhost.yml",
        "content_hash": "c1",
        "hosts": HOSTS,
        "vars": {"postfix_warmup_stage": 1},
        "secret_vars": {"opendkim_keys": [{"domain": "a.test", "selector": "pm1", "private_key": SECRET}]},
        "host_vars": {"mx-01": {"postfix_virtual_domains": ["a.test"]}},
        "group_vars": {"common_firewall_enabled": False},
        "connection": {"host_key_checking": "off"},
        "timeout_seconds": 600,
    }
    props.update(changes)
    return props


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    """Record the calls instead of running ansible-playbook; the inventory goes to a temp folder."""
    monkeypatch.setenv(runner.INVENTORY_DIR_ENV, str(tmp_path))
    calls = []

    def run_playbook(playbook, text, **kwargs):
        calls.append({"playbook": playbook, "inventory": text, **kwargs})
        return runner.PlaybookRun(
            "successful", 0, 12.5, hosts={"mx-01": runner.HostStats(ok=80, changed=3)}, artifact_dir="/a"
        )

    monkeypatch.setattr(runner, "run_playbook", run_playbook)
    return calls


def test_create_runs_once_and_outputs_results_without_secret_values(fake_run, tmp_path):
    provider = resources.AnsiblePlaybookProvider()
    created = provider.create(_news())
    assert len(fake_run) == 1
    call = fake_run[0]
    assert call["secret_vars"]["opendkim_keys"][0]["private_key"] == SECRET
    assert call["extra_vars"] == {"postfix_warmup_stage": 1}
    assert "mx-01" in call["inventory"] and SECRET not in call["inventory"]
    outs = created.outs
    assert "secret_vars" not in outs
    assert SECRET not in repr(outs)
    assert outs["host_results"] == {
        "mx-01": {"ok": 80, "changed": 3, "failed": 0, "unreachable": 0, "skipped": 0}
    }
    assert outs["run_count"] == 1 and outs["changed"] == 3
    assert outs["inventory_path"] == str(tmp_path / "generated-dev.yml")
    assert (tmp_path / "generated-dev.yml").read_text() == call["inventory"]
    assert len(outs["vars_salt"]) == 32 and len(outs["vars_hash"]) == 64


def test_nothing_changed_means_no_rerun(fake_run):
    provider = resources.AnsiblePlaybookProvider()
    outs = provider.create(_news()).outs
    diff = provider.diff("id", outs, _news())
    assert diff.changes is False


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"content_hash": "c2"}, "role content"),
        ({"vars": {"postfix_warmup_stage": 2}}, "plain variables"),
        (
            {
                "secret_vars": {
                    "opendkim_keys": [{"domain": "a.test", "selector": "pm1", "private_key": "other"}]
                }
            },
            "a secret",
        ),
        ({"hosts": [{**HOSTS[0], "ip": "203.0.113.99"}]}, "a host's address"),
        ({"host_vars": {"mx-01": {"postfix_virtual_domains": ["b.test"]}}}, "host variables"),
        ({"connection": {"host_key_checking": "strict"}}, "connection settings"),
    ],
)
def test_each_input_that_matters_triggers_a_rerun(fake_run, change, reason):
    provider = resources.AnsiblePlaybookProvider()
    outs = provider.create(_news()).outs
    assert provider.diff("id", outs, _news(**change)).changes is True, reason


def test_timeout_alone_does_not_rerun(fake_run):
    provider = resources.AnsiblePlaybookProvider()
    outs = provider.create(_news()).outs
    assert provider.diff("id", outs, _news(timeout_seconds=900)).changes is False


def test_unknown_inputs_in_preview_show_an_update():
    provider = resources.AnsiblePlaybookProvider()
    assert provider.diff("id", {"content_hash": "c1"}, _news(hosts=UNKNOWN)).changes is True


def test_update_keeps_the_salt_and_counts_runs(fake_run):
    provider = resources.AnsiblePlaybookProvider()
    outs = provider.create(_news()).outs
    updated = provider.update("id", outs, _news(vars={"postfix_warmup_stage": 5})).outs
    assert updated["vars_salt"] == outs["vars_salt"] and updated["run_count"] == 2
    assert provider.diff("id", updated, _news(vars={"postfix_warmup_stage": 5})).changes is False


def test_failed_run_fails_the_update_naming_host_and_task(monkeypatch, tmp_path):
    monkeypatch.setenv(runner.INVENTORY_DIR_ENV, str(tmp_path))
    failure = runner.AnsibleRunFailed(
        "AnsiblePlaybook[dev]: ... failed on host mx-01 at task 'T.'", "mx-01", "T."
    )

    def run_playbook(*_args, **_kwargs):
        raise failure

    monkeypatch.setattr(runner, "run_playbook", run_playbook)
    with pytest.raises(runner.AnsibleRunFailed) as caught:
        resources.AnsiblePlaybookProvider().update("id", {"vars_salt": "s", "run_count": 1}, _news())
    assert caught.value.host == "mx-01" and caught.value.task == "T."


def test_check_names_each_bad_input_without_secret_values():
    news = _news(
        stack="bad stack!",
        playbook="site.yml",
        hosts=[{"name": "Bad_Name", "ip": "nope"}],
        vars={"Bad": 1},
        secret_vars={"ansible_user": SECRET},
        connection={"port": 70000},
        timeout_seconds=5,
    )
    result = resources.AnsiblePlaybookProvider().check({}, news)
    props = {f.property for f in result.failures}
    assert props == {"stack", "playbook", "hosts", "vars", "secret_vars", "connection", "timeout_seconds"}
    assert all(SECRET not in f.reason for f in result.failures)


def test_check_accepts_unknown_hosts_during_preview():
    assert resources.AnsiblePlaybookProvider().check({}, _news(hosts=UNKNOWN)).failures == []


def test_delete_removes_the_generated_inventory_only(fake_run, tmp_path):
    provider = resources.AnsiblePlaybookProvider()
    outs = provider.create(_news()).outs
    other = tmp_path / "generated-prod.yml"
    other.write_text("x")
    provider.delete("id", outs)
    assert not (tmp_path / "generated-dev.yml").exists() and other.exists()


def test_mailu_inventory_has_its_own_file_name():
    assert resources.inventory_file_name("dev", "mailhost.yml") == "dev"
    assert resources.inventory_file_name("dev", "mailu.yml") == "dev-mailu"


@pulumi.runtime.test
def test_resource_hashes_roles_in_the_program_and_marks_secret_vars_secret(mocks):
    playbook = resources.AnsiblePlaybook(
        "mail", hosts=HOSTS, stack="dev", secret_vars={"opendkim_keys": []}, vars={"postfix_warmup_stage": 1}
    )

    def check(values):
        content_hash, _ = values
        args = mocks.created[-1]
        assert args.typ == "pulumi-python:dynamic/ansible:Playbook"
        assert content_hash == runner.content_hash("mailhost.yml")
        assert args.inputs["stack"] == "dev"

    return pulumi.Output.all(playbook.content_hash, playbook.urn).apply(check)


def test_numbers_that_went_through_pulumi_as_doubles_reach_ansible_as_ints(fake_run):
    provider = resources.AnsiblePlaybookProvider()
    outs = provider.create(_news(vars={"postfix_message_size_limit_mb": 25.0}, timeout_seconds=600.0)).outs
    assert fake_run[0]["extra_vars"] == {"postfix_message_size_limit_mb": 25}
    assert type(fake_run[0]["timeout"]) is int
    assert provider.diff("id", outs, _news(vars={"postfix_message_size_limit_mb": 25})).changes is False


def test_unknown_objects_from_the_engine_are_recognised_in_check_and_diff():
    from pulumi.output import Unknown

    provider = resources.AnsiblePlaybookProvider()
    news = _news(secret_vars=Unknown(), hosts=[{**HOSTS[0], "ip": Unknown()}])
    assert provider.check({}, news).failures == []
    assert provider.diff("id", {"content_hash": "c1"}, news).changes is True


# The devenv's SSH key (PENGUINMAILS_FLEET_SSH_PRIVATE_KEY) is offered to dev hosts only.


def _inventory_vars(fake_run) -> dict:
    return yaml.safe_load(fake_run[-1]["inventory"])["all"]["vars"]


def test_dev_stack_hosts_get_the_devenv_ssh_key(fake_run, monkeypatch):
    monkeypatch.setenv(runner.SSH_KEY_ENV, DEVENV_VARS[runner.SSH_KEY_ENV])
    provider = resources.AnsiblePlaybookProvider()
    provider.settings = stack_settings("dev")
    provider.create(_news())
    assert _inventory_vars(fake_run)["ansible_ssh_private_key_file"] == DEVENV_VARS[runner.SSH_KEY_ENV]


def test_production_hosts_never_get_the_devenv_ssh_key(fake_run, monkeypatch):
    monkeypatch.setenv(runner.SSH_KEY_ENV, DEVENV_VARS[runner.SSH_KEY_ENV])
    provider = resources.AnsiblePlaybookProvider()
    provider.settings = stack_settings("production")
    provider.create(_news(stack="prod"))
    assert "ansible_ssh_private_key_file" not in _inventory_vars(fake_run)
    # A key given in the connection input is used on every stack.
    provider.create(_news(stack="prod", connection={"private_key_file": "/etc/pm/deploy_ed25519"}))
    assert _inventory_vars(fake_run)["ansible_ssh_private_key_file"] == "/etc/pm/deploy_ed25519"
