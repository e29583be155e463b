"""The MailU role on a real podman host, and the rule that a host runs MailU or the native roles, never both.

MailU's images cannot be pulled here, so what is checked is what the role renders and validates on the
host. The same host is then offered to the native playbook, which must refuse it naming host and task.
"""

from __future__ import annotations

import uuid

import pytest
import testinfra
import yaml

from modules.ansible import runner
from tests.infra.support import Lab

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def mailu_host(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ansible-mailu")
    lab = Lab(folder, kind="base")
    try:
        host = lab.create("mu-1", "mu-1.mailu.penguinmails.test")
        inventory_file = folder / "inventory.yml"
        inventory_file.write_text(lab.inventory(group="mailu"))
        secret_key = f"mailu-{uuid.uuid4().hex}"
        secret_vars = {"mailu_secret_key": secret_key}
        runs = [
            runner.run_playbook(
                "mailu.yml", inventory_file.read_text(), stack=lab.prefix, secret_vars=secret_vars
            )
            for _ in range(2)
        ]
        testinfra_host = testinfra.get_host("ansible://mu-1", ansible_inventory=str(inventory_file))
        yield {"lab": lab, "host": host, "runs": runs, "secret_key": secret_key, "infra": testinfra_host}
    finally:
        lab.close()


def test_mailu_converges_and_second_run_changes_nothing(mailu_host):
    first, second = mailu_host["runs"]
    assert first.hosts["mu-1"].changed > 0 and first.hosts["mu-1"].failed == 0
    assert second.hosts["mu-1"].changed == 0


def test_mailu_compose_file_is_complete(mailu_host):
    infra, ip = mailu_host["infra"], mailu_host["host"]["ip"]
    compose = yaml.safe_load(infra.file("/opt/mailu/docker-compose.yml").content_string)
    assert {"front", "admin", "imap", "smtp", "antispam", "redis", "resolver"} <= set(compose["services"])
    assert all(service["image"].endswith(":2024.06") for service in compose["services"].values())
    ports = compose["services"]["front"]["ports"]
    assert f"{ip}:25:25" in ports and f"{ip}:993:993" in ports and f"{ip}:587:587" in ports
    assert compose["networks"]["default"]["ipam"]["config"][0]["subnet"] == "192.168.203.0/24"


def test_mailu_env_sets_every_key_and_stays_private(mailu_host):
    infra = mailu_host["infra"]
    env_file = infra.file("/opt/mailu/mailu.env")
    assert env_file.mode == 0o600 and env_file.user == "root"
    values = dict(
        line.split("=", 1)
        for line in env_file.content_string.splitlines()
        if line and not line.startswith("#")
    )
    assert values["SECRET_KEY"] == mailu_host["secret_key"]
    assert values["MESSAGE_RATELIMIT"] == "200/day"
    assert values["HOSTNAMES"] == "mu-1.mailu.penguinmails.test"
    assert values["DOMAIN"] == "mailu.penguinmails.test"
    assert values["TLS_FLAVOR"] == "cert"
    assert infra.file("/opt/mailu/certs/key.pem").mode == 0o600


def test_mailu_host_runs_no_native_mail_stack(mailu_host):
    infra = mailu_host["infra"]
    assert infra.file("/etc/penguinmails/mail-flavor").content_string.strip() == "mailu"
    assert not infra.socket("tcp://0.0.0.0:25").is_listening
    assert not infra.package("dovecot-core").is_installed


def test_native_playbook_refuses_a_mailu_host_naming_host_and_task(mailu_host):
    lab = mailu_host["lab"]
    text = lab.inventory(group="mailhosts")
    with pytest.raises(runner.AnsibleRunFailed) as caught:
        runner.run_playbook("mailhost.yml", text, stack=lab.prefix)
    error = caught.value
    assert error.host == "mu-1"
    assert error.task == "Ensure the host keeps the mail flavor it was built with."
    assert "host mu-1" in error.message and "never both" in error.message
    assert not mailu_host["infra"].file("/etc/postfix/main.cf").exists


def test_bad_variable_fails_before_anything_changes_naming_it(mailu_host):
    lab = mailu_host["lab"]
    text = lab.inventory(group="mailu")
    with pytest.raises(runner.AnsibleRunFailed) as caught:
        runner.run_playbook(
            "mailu.yml",
            text,
            stack=lab.prefix,
            extra_vars={"mailu_tls_flavor": "notls"},
            secret_vars={"mailu_secret_key": mailu_host["secret_key"]},
        )
    assert "mailu_tls_flavor" in caught.value.message
    assert "Validating arguments" in caught.value.task
    assert caught.value.run is not None and caught.value.run.hosts["mu-1"].changed == 0


def test_invalid_secret_is_reported_without_its_value(mailu_host):
    lab = mailu_host["lab"]
    short = "tooshort-" + uuid.uuid4().hex[:6]
    with pytest.raises(runner.AnsibleRunFailed) as caught:
        runner.run_playbook(
            "mailu.yml",
            lab.inventory(group="mailu"),
            stack=lab.prefix,
            secret_vars={"mailu_secret_key": short},
        )
    assert caught.value.host == "mu-1"
    assert caught.value.task == "Ensure the MailU settings are usable."
    assert short not in str(caught.value)
    artifacts = runner.state_dir() / "artifacts" / lab.prefix
    assert not any(short in p.read_text(errors="replace") for p in artifacts.rglob("*") if p.is_file())
