"""modules/postgres/backup/fleet.py: the postgresql role's backup variables of a fleet tier."""

from __future__ import annotations

import pytest

from modules.config.backup import BackupConfig
from modules.errors import ValidationError
from modules.postgres.backup import fleet

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture(autouse=True)
def _no_devenv(monkeypatch):
    for name in (fleet.ENV_FLEET_ENDPOINT, fleet.ENV_FLEET_CA_FILE, fleet.ENV_BUCKET, fleet.ENV_CA_FILE):
        monkeypatch.delenv(name, raising=False)


def test_a_dev_stack_takes_the_fleet_endpoint_never_the_loopback_one(monkeypatch, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(CA)
    monkeypatch.setenv("PENGUINMAILS_S3_ENDPOINT", "https://localhost:9397")
    monkeypatch.setenv(fleet.ENV_FLEET_ENDPOINT, "https://10.88.0.1:9400")
    monkeypatch.setenv(fleet.ENV_FLEET_CA_FILE, str(ca))
    monkeypatch.setenv(fleet.ENV_BUCKET, "penguinmails-backups")
    config = BackupConfig.model_validate({"oltp": {"full_schedule": "15 3 * * 0", "retention_days": 7}})
    values = fleet.backup_vars(config, "oltp", dev=True)
    assert values["postgresql_backup_s3_endpoint"] == "10.88.0.1"
    assert values["postgresql_backup_s3_port"] == 9400
    assert values["postgresql_backup_s3_ca_certificate"] == CA
    assert values["postgresql_backup_stanza"] == "fleet-oltp"
    assert values["postgresql_backup_full_schedule"] == "15 3 * * 0"
    assert values["postgresql_backup_retention_days"] == 7
    assert not any("key" in name or "pass" in name for name in values)  # secrets travel apart


def test_a_dev_stack_without_a_reachable_endpoint_has_no_fleet_backup(monkeypatch):
    monkeypatch.setenv("PENGUINMAILS_S3_ENDPOINT", "https://localhost:9397")
    assert fleet.backup_vars(BackupConfig(), "oltp", dev=True) is None


def test_disabled_backups_give_nothing_and_production_ignores_the_devenv(monkeypatch):
    monkeypatch.setenv(fleet.ENV_FLEET_ENDPOINT, "https://10.88.0.1:9400")
    assert fleet.backup_vars(BackupConfig(enabled=False), "oltp", dev=True) is None
    with pytest.raises(ValidationError, match=r"postgres\.backup\.endpoint"):
        fleet.backup_vars(BackupConfig(bucket="pm-backups"), "oltp", dev=False)
    with pytest.raises(ValidationError, match=r"postgres\.backup\.bucket"):
        fleet.backup_vars(BackupConfig(endpoint="https://s3.example.test"), "content", dev=False)


def test_an_unreadable_ca_file_names_the_field(tmp_path):
    config = BackupConfig(
        endpoint="https://s3.example.test", bucket="pm-backups", ca_file=str(tmp_path / "no")
    )
    with pytest.raises(ValidationError, match=r"postgres\.backup\.ca_file"):
        fleet.backup_vars(config, "oltp", dev=False)
