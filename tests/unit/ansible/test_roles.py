"""The roles follow the house layout: documented defaults in step with argument specs, include-only
tasks/main.yml, templates with the ansible_managed header that mirror target paths, no_log on secrets,
handlers that check before they reload; and ansible-lint passes with the production profile."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modules.ansible.runner import ANSIBLE_DIR

ROLES = (
    "common", "postfix", "dovecot", "spamassassin", "opendkim", "mailu", "redis", "mta_sts", "acme", "monitoring",
    "monitoring_agent", "postgresql",
)  # fmt: skip
# Variables whose values are secrets; any task that uses one must carry no_log.
SECRET_VARS = (
    "common_tls_private_key",
    "dovecot_users",
    "opendkim_keys",
    "opendkim_key",
    "dovecot_user",
    "mailu_secret_key",
    "redis_admin_password",
    "redis_tls_private_key",
    "redis_acl_users",
    "redis_acl_user",
    "acme_tsig_secret",
    "monitoring_smarthost_password",
    "postgresql_tls_private_key",
    "postgresql_admin_password",
    "postgresql_replication_password",
    "postgresql_backup_s3_access_key",
    "postgresql_backup_s3_secret_key",
    "postgresql_backup_cipher_pass",
)


def _yaml(path: Path):
    return yaml.safe_load(path.read_text())


def _tasks(role: str):
    for path in sorted((ANSIBLE_DIR / "roles" / role / "tasks").glob("*.yml")):
        for task in _yaml(path) or []:
            yield path, task


@pytest.mark.parametrize("role", ROLES)
def test_role_has_the_standard_layout(role):
    base = ANSIBLE_DIR / "roles" / role
    for part in (
        "defaults/main.yml",
        "tasks/main.yml",
        "handlers/main.yml",
        "meta/main.yml",
        "meta/argument_specs.yml",
    ):
        assert (base / part).is_file(), f"{role}: {part} is missing"
    assert (base / "templates").is_dir()


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_argument_specs_are_in_step(role):
    base = ANSIBLE_DIR / "roles" / role
    defaults = _yaml(base / "defaults/main.yml")
    options = _yaml(base / "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    only_defaults, only_specs = set(defaults) - set(options), set(options) - set(defaults)
    assert not only_defaults and not only_specs, f"{role}: defaults {only_defaults}, specs {only_specs}"
    for name, option in options.items():
        assert name.startswith(f"{role}_"), name
        assert option.get("description"), f"{name} has no description"
        assert option.get("type"), f"{name} has no type"


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_documented_by_a_comment(role):
    lines = (ANSIBLE_DIR / "roles" / role / "defaults/main.yml").read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[a-z_]+:", line):
            above = [ln for ln in lines[:index] if ln.strip()]
            previous = above[-1] if above else ""
            # A comment directly above, or the variable continues a documented pair (cert/key files).
            assert previous.startswith("#") or re.match(r"^[a-z_]+:", previous), (
                f"{role}: {line} lacks a comment"
            )


@pytest.mark.parametrize("role", ROLES)
def test_tasks_main_only_includes(role):
    for task in _yaml(ANSIBLE_DIR / "roles" / role / "tasks/main.yml"):
        assert "ansible.builtin.include_tasks" in task, f"{role}: tasks/main.yml has a non-include task"


@pytest.mark.parametrize("role", ROLES)
def test_task_names_are_sentences(role):
    for path, task in _tasks(role):
        name = task.get("name", "")
        assert name[:1].isupper() and name.endswith("."), f"{path.name}: {name!r}"


@pytest.mark.parametrize("role", ROLES)
def test_templates_carry_the_managed_header_and_mirror_target_paths(role):
    base = ANSIBLE_DIR / "roles" / role / "templates"
    templates = sorted(base.rglob("*.j2"))
    assert templates
    for template in templates:
        head = "\n".join(template.read_text().splitlines()[:2])
        assert "{{ ansible_managed }}" in head, template
        relative = template.relative_to(base)
        assert relative.parts[0] in ("etc", "opt"), f"{relative} does not mirror an absolute target path"


@pytest.mark.parametrize("role", ROLES)
def test_tasks_that_touch_secrets_have_no_log(role):
    for path, task in _tasks(role):
        text = yaml.safe_dump(task)
        used = [var for var in SECRET_VARS if re.search(rf"\b{var}\b", text)]
        if used and "ansible.builtin.include_tasks" not in task and "ansible.builtin.assert" not in task:
            assert task.get("no_log") is True, f"{path.name}: {task['name']!r} uses {used} without no_log"


def test_secret_asserts_that_show_values_have_no_log():
    # Asserts over secret values (passwords, keys) must not echo them on failure.
    for role, task_name in (
        ("dovecot", "Ensure every mailbox has an address and a password."),
        ("opendkim", "Ensure every key names its domain and selector and holds a PEM private key."),
        ("mailu", "Ensure the MailU settings are usable."),
    ):
        task = next(t for _, t in _tasks(role) if t["name"] == task_name)
        assert task.get("no_log") is True


# Restarts the service module cannot do: Debian's postfwd init script cannot stop postfwd (see the handler).
SHELL_RESTARTS = {"Restart postfwd"}


@pytest.mark.parametrize("role", ("postfix", "dovecot", "spamassassin", "opendkim", "mta_sts"))
def test_handlers_check_before_they_reload(role):
    handlers = _yaml(ANSIBLE_DIR / "roles" / role / "handlers/main.yml")
    topics: dict[str, list[dict]] = {}
    for handler in handlers:
        topics.setdefault(handler.get("listen", handler["name"]), []).append(handler)
    checked = [hs for hs in topics.values() if len(hs) > 1]
    assert checked, f"{role}: no handler topic checks before reloading"
    for handlers_of_topic in checked:
        first, *rest = handlers_of_topic
        assert "ansible.builtin.command" in first or "ansible.builtin.shell" in first
        assert first.get("changed_when") is False
        assert all("ansible.builtin.service" in h or h["name"] in SHELL_RESTARTS for h in rest)


def test_playbooks_keep_mailu_and_native_hosts_apart():
    native = _yaml(ANSIBLE_DIR / "playbooks/mailhost.yml")[0]
    mailu = _yaml(ANSIBLE_DIR / "playbooks/mailu.yml")[0]
    assert native["hosts"] == "mailhosts" and mailu["hosts"] == "mailu"
    assert native["vars"]["common_mail_flavor"] == "native" and mailu["vars"]["common_mail_flavor"] == "mailu"
    assert "'mailu' not in group_names" in native["pre_tasks"][0]["ansible.builtin.assert"]["that"]
    assert "'mailhosts' not in group_names" in mailu["pre_tasks"][0]["ansible.builtin.assert"]["that"]
    assert {r["role"] for r in native["roles"]} == {
        "common",
        "acme",
        "postfix",
        "dovecot",
        "spamassassin",
        "opendkim",
        "mta_sts",
        "monitoring_agent",
    }
    roles = [r["role"] for r in native["roles"]]
    # The postfix exporter reads Postfix's showq socket and log: the agent comes after Postfix.
    assert roles.index("monitoring_agent") > roles.index("postfix")
    agent = next(r for r in native["roles"] if r["role"] == "monitoring_agent")
    assert agent["when"] == "monitoring_agent_enabled | default(true) | bool"
    assert [r["role"] for r in mailu["roles"]] == ["common", "mailu"]


def test_ansible_cfg_pipelines_persists_and_caches_facts():
    text = (ANSIBLE_DIR / "ansible.cfg").read_text()
    assert re.search(r"^pipelining = True$", text, re.M)
    assert "ControlPersist=" in text
    assert re.search(r"^fact_caching = jsonfile$", text, re.M)
    cache = re.search(r"^fact_caching_connection = (.+)$", text, re.M).group(1)
    assert (ANSIBLE_DIR / cache).resolve().is_relative_to((ANSIBLE_DIR.parent / ".cache").resolve())


def test_ansible_lint_passes_with_the_production_profile():
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-lint"), "--nocolor"],
        cwd=ANSIBLE_DIR, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Profile 'production' was required, and it passed." in output
