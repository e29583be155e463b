"""The MailU role on a real podman host, and the rule that a host runs MailU or the native roles, never both.

MailU's images cannot be pulled here, so what is checked is what the role renders and validates on the
host. The same host is then offered to the native playbook, which must refuse it naming host and task.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import testinfra
import yaml
from cryptography.hazmat.primitives import serialization

from modules.ansible import runner
from modules.dns.dkim import generate_key
from tests.infra.support import Lab

pytestmark = pytest.mark.services

DOMAIN = "acme.mailu.penguinmails.test"
# The pinned dev dependency (Debian's 1.0.3 has no `config` command).
PODMAN_COMPOSE = str(Path(sys.executable).parent / "podman-compose")


@pytest.fixture(scope="module")
def mailu_host(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ansible-mailu")
    lab = Lab(folder, kind="base")
    try:
        host = lab.create("mu-1", "mu-1.mailu.penguinmails.test")
        inventory_file = folder / "inventory.yml"
        inventory_file.write_text(lab.inventory(group="mailu"))
        secret_key = f"mailu-{uuid.uuid4().hex}"
        private_pem, public_b64 = generate_key()
        report_password = f"report-{uuid.uuid4().hex}"
        secret_vars = {
            "mailu_secret_key": secret_key,
            # What MailHosts hands over: the DNS component's key and the report mailbox.
            "mailu_dkim_keys": [{"domain": DOMAIN, "selector": "pm1", "private_key": private_pem}],
            "mailu_users": [{"address": f"dmarc-reports@{DOMAIN}", "password": report_password}],
        }
        extra_vars = {"mailu_dkim_selector": "pm1"}
        runs = [
            runner.run_playbook(
                "mailu.yml",
                inventory_file.read_text(),
                stack=lab.prefix,
                secret_vars=secret_vars,
                extra_vars=extra_vars,
            )
            for _ in range(2)
        ]
        testinfra_host = testinfra.get_host("ansible://mu-1", ansible_inventory=str(inventory_file))
        yield {
            "lab": lab,
            "host": host,
            "runs": runs,
            "secret_key": secret_key,
            "infra": testinfra_host,
            "private_pem": private_pem,
            "public_b64": public_b64,
            "report_password": report_password,
            "folder": folder,
        }
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


def test_mailu_imports_the_published_dkim_key_with_the_published_selector(mailu_host):
    infra = mailu_host["infra"]
    import_file = infra.file("/opt/mailu/import/config-import.yml")
    assert import_file.mode == 0o600 and import_file.user == "root"
    data = yaml.safe_load(import_file.content_string)
    (domain,) = [d for d in data["domain"] if d["name"] == DOMAIN]
    # The key MailU will sign with is the one whose public half the DNS publishes.
    key = serialization.load_pem_private_key(domain["dkim_key"].encode(), password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert base64.b64encode(der).decode() == mailu_host["public_b64"]
    assert data["user"] == [
        {"email": f"dmarc-reports@{DOMAIN}", "password": mailu_host["report_password"], "hash_password": True}
    ]
    env = infra.file("/opt/mailu/mailu.env").content_string
    assert "DKIM_SELECTOR=pm1" in env.splitlines()
    compose = yaml.safe_load(infra.file("/opt/mailu/docker-compose.yml").content_string)
    assert "/opt/mailu/import:/import:ro" in compose["services"]["admin"]["volumes"]


def test_secrets_of_the_import_stay_out_of_the_run_artifacts(mailu_host):
    artifacts = runner.state_dir() / "artifacts" / mailu_host["lab"].prefix
    secrets = [mailu_host["private_pem"].splitlines()[1], mailu_host["report_password"]]
    files = [p for p in artifacts.rglob("*") if p.is_file()]
    assert files
    for path in files:
        text = path.read_text(errors="replace")
        assert not any(secret in text for secret in secrets), path


def test_rendered_compose_passes_podman_compose_config(mailu_host):
    """podman-compose (Debian's) parses the compose file as MailU's hosts will run it, with its env file."""
    infra, folder = mailu_host["infra"], mailu_host["folder"] / "compose-check"
    folder.mkdir()
    for name in ("docker-compose.yml", "mailu.env"):
        (folder / name).write_text(infra.file(f"/opt/mailu/{name}").content_string)
    done = subprocess.run(
        [PODMAN_COMPOSE, "-f", str(folder / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr
    rendered = yaml.safe_load(done.stdout)
    ip = mailu_host["host"]["ip"]
    assert rendered["services"]["front"]["ports"] == [
        f"{ip}:{port}:{port}" for port in (25, 465, 587, 993, 80, 443)
    ]
    assert set(rendered["services"]) >= {"front", "admin", "imap", "smtp", "antispam", "redis", "resolver"}


def test_podman_compose_config_rejects_a_broken_compose_file(mailu_host):
    """The check above can fail: a compose file with a service lacking an image is refused."""
    folder = mailu_host["folder"] / "compose-broken"
    folder.mkdir()
    (folder / "docker-compose.yml").write_text("services:\n  front:\n    ports: 25\n")
    done = subprocess.run(
        [PODMAN_COMPOSE, "-f", str(folder / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
    )
    assert done.returncode != 0
