"""AnsiblePlaybook through the real Pulumi engine against a real podman host.

It runs on create, not again when nothing changed (preview shows no change and the run counter stays),
again when a variable changes, fails the update naming host and task when the playbook fails, keeps the
secret out of the state files, and removes its generated inventory on destroy.
"""

from __future__ import annotations

import os
import sys
import uuid

import pulumi
import pytest
from pulumi import automation as auto

from modules.ansible.resources import AnsiblePlaybook
from modules.engine import engine_env, pulumi_command
from tests.infra.support import DEV_GROUP_VARS, Lab

pytestmark = [pytest.mark.engine, pytest.mark.services]

SECRET = f"mailu-secret-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    found = Lab(tmp_path_factory.mktemp("ansible-engine"), kind="base")
    try:
        found.create("mu-1", "mu-1.engine.penguinmails.test")
        yield found
    finally:
        found.close()


def _stack(tmp_path, lab, settings: dict):
    """An inline-program stack whose program reads ``settings`` at each run (so a test can change it)."""
    connection = {"private_key_file": str(lab.key_file), "host_key_checking": "off"}

    def program():
        playbook = AnsiblePlaybook(
            "mail",
            hosts=[lab.hosts["mu-1"]],
            playbook="mailu.yml",
            stack=settings["stack"],
            vars=dict(settings["vars"]),
            secret_vars=pulumi.Output.secret({"mailu_secret_key": SECRET}),
            group_vars=DEV_GROUP_VARS,
            connection=connection,
            timeout_seconds=900,
        )
        pulumi.export("host_results", playbook.host_results)
        pulumi.export("run_count", playbook.run_count)
        pulumi.export("inventory_path", playbook.inventory_path)

    env = {
        **os.environ,
        **engine_env(tmp_path / "state"),
        "PULUMI_PYTHON_CMD": sys.executable,
        "PENGUINMAILS_ANSIBLE_INVENTORY_DIR": str(tmp_path / "inventory"),
    }
    workspace = auto.LocalWorkspaceOptions(
        work_dir=str(tmp_path),
        env_vars=env,
        pulumi_command=pulumi_command(),
        secrets_provider="passphrase",
        project_settings=auto.ProjectSettings(name="pm-ansible-itest", runtime="python"),
    )
    return auto.create_or_select_stack(
        settings["stack"], project_name="pm-ansible-itest", program=program, opts=workspace
    )


def test_playbook_resource_reruns_only_when_something_changed(tmp_path, lab):
    settings = {"stack": lab.prefix, "vars": {"mailu_message_ratelimit": "200/day"}}
    stack = _stack(tmp_path, lab, settings)
    inventory = tmp_path / "inventory" / f"generated-{lab.prefix}-mailu.yml"

    up = stack.up(color="never")
    assert up.outputs["run_count"].value == 1
    results = up.outputs["host_results"].value["mu-1"]
    assert results["failed"] == 0 and results["unreachable"] == 0 and results["changed"] > 0
    assert up.outputs["inventory_path"].value == str(inventory)
    assert "mu-1" in inventory.read_text() and SECRET not in inventory.read_text()

    # Nothing changed: no update planned, and an up does not run the playbook again.
    preview = stack.preview(color="never", expect_no_changes=True)
    assert set(preview.change_summary) == {"same"}
    again = stack.up(color="never")
    assert again.outputs["run_count"].value == 1
    assert again.summary.resource_changes.get("update", 0) == 0

    # A variable changed: one update, the playbook runs again and changes the host.
    settings["vars"] = {"mailu_message_ratelimit": "300/day"}
    preview = stack.preview(color="never")
    assert preview.change_summary.get("update") == 1
    changed = stack.up(color="never")
    assert changed.outputs["run_count"].value == 2
    assert changed.outputs["host_results"].value["mu-1"]["changed"] >= 1

    # The secret input sits encrypted in the state; neither it nor its plain value is readable there.
    state_files = list((tmp_path / "state" / "backend").rglob("*.json"))
    assert state_files
    for path in state_files:
        text = path.read_text()
        assert SECRET not in text, f"plaintext secret in {path}"
    assert any("vars_hash" in path.read_text() for path in state_files)

    # A failing run fails the update naming host and task; the state keeps the last good run.
    settings["vars"] = {"mailu_message_ratelimit": "300/day", "mailu_tls_flavor": "notls"}
    with pytest.raises(auto.CommandError) as caught:
        stack.up(color="never")
    message = str(caught.value)
    assert "failed on host mu-1 at task" in message and "mailu_tls_flavor" in message, message[-2000:]
    assert SECRET not in message
    assert stack.outputs()["run_count"].value == 2

    settings["vars"] = {"mailu_message_ratelimit": "300/day"}
    stack.destroy(color="never")
    assert not inventory.exists()
    stack.workspace.remove_stack(settings["stack"])
