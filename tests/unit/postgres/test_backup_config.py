"""postgres.backup: validation, per-tier defaults, retention of a shared stanza, the rendered config."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from modules.config.backup import BackupConfig
from modules.config.model import SECRET_KEYS, PostgresConfig, StackConfig
from modules.postgres.backup import pgbackrest as pb
from modules.postgres.backup.resource import stanza_for, stanza_groups
from modules.providers import ProviderSettings


def test_defaults_per_tier_and_the_longest_retention_for_a_shared_stanza():
    config = BackupConfig()
    assert {t: config.tier(t).retention_days for t in ("oltp", "content", "queue", "analytics")} == {
        "oltp": 90,
        "content": 180,
        "queue": 30,
        "analytics": 365,
    }
    assert config.retention_for(["oltp", "queue"]) == 90
    assert config.retention_for(["oltp", "content", "analytics", "queue"]) == 365


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"endpoint": "http://s3.example.test"}, "endpoint"),
        ({"oltp": {"full_schedule": "every sunday"}}, "full_schedule"),
        ({"queue": {"retention_days": 0}}, "retention_days"),
        ({"bucket": "Bad_Bucket"}, "bucket"),
        ({"retention": 5}, "retention"),
        ({"drill_schedule": "weekly"}, "drill_schedule"),
    ],
)
def test_bad_input_names_the_field(raw, field):
    with pytest.raises(ValidationError) as error:
        StackConfig.model_validate({"postgres": {"backup": raw}})
    assert field in str(error.value)


def test_secret_keys_are_secret_config():
    assert {"backupS3AccessKey", "backupS3SecretKey", "backupCipherPass"} <= set(SECRET_KEYS)


def test_one_stanza_per_cluster():
    shared = PostgresConfig()
    assert list(stanza_groups(shared).values()) == [["oltp", "content", "analytics", "queue"]]
    assert stanza_for(shared, "dev", "queue") == "local-5433"
    split = PostgresConfig.model_validate({"analytics": {"port": 5434}, "queue": {"enabled": False}})
    assert list(stanza_groups(split).values()) == [["oltp", "content"], ["analytics"]]
    assert stanza_for(split, "dev", "analytics") == "local-5434"
    with pytest.raises(pb.BackupError, match=r"postgres\.queue"):
        stanza_for(split, "dev", "queue")


def test_repo_needs_its_secrets_and_https():
    settings = ProviderSettings(
        {
            "penguinmails:environment": "production",
            "penguinmails:postgres": {
                "backup": {"endpoint": "https://s3.internal.test:9000", "bucket": "pm-backups"}
            },
            "penguinmails:backupS3AccessKey": "AK",
            "penguinmails:backupS3SecretKey": "SK",
        }
    )
    with pytest.raises(pb.BackupError, match="backupCipherPass"):
        pb.repo_from_settings(settings, "prod")
    raw = dict(settings._raw, **{"penguinmails:backupCipherPass": "CP"})
    repo = pb.repo_from_settings(ProviderSettings(raw), "prod")
    assert (repo.host, repo.port, repo.path) == ("s3.internal.test", 9000, "/penguinmails/prod")
    assert "SK" not in repr(repo) and "CP" not in repr(repo)


def test_production_never_reads_the_devenv_variables(monkeypatch):
    monkeypatch.setenv(pb.ENV_ENDPOINT, "https://localhost:9397")
    monkeypatch.setenv(pb.ENV_CIPHER_PASS, "dev-pass")
    settings = ProviderSettings({"penguinmails:environment": "production"})
    with pytest.raises(pb.BackupError, match=r"postgres\.backup\.endpoint"):
        pb.repo_from_settings(settings, "prod")


def test_rendered_config_and_archive_command():
    cluster = pb.Cluster("pm-dev", Path("/srv/pg/data"), 5433)
    repo = pb.Repo(
        "localhost", 9397, "b", "us-east-1", "path", True, "/ca.pem", "/penguinmails/dev", 2, "AK", "SK", "CP"
    )
    text = pb.render_config(cluster, repo, 365)
    for line in (
        "repo1-type=s3",
        "repo1-cipher-type=aes-256-cbc",
        "repo1-cipher-pass=CP",
        "repo1-retention-full-type=time",
        "repo1-retention-full=365",
        "repo1-s3-uri-style=path",
        "repo1-storage-port=9397",
        "repo1-storage-ca-file=/srv/pg/pgbackrest/ca.pem",
        "pg1-path=/srv/pg/data",
        "[pm-dev]",
    ):
        assert line in text.splitlines()
    archive = pb.archive_settings(cluster)
    assert "archive_mode = on" in archive and "--stanza=pm-dev archive-push %p" in archive
    assert "CP" not in archive and "SK" not in archive  # secrets stay in the 0600 file, off command lines


def test_stacks_sharing_a_stanza_keep_the_longest_retention(tmp_path):
    from modules.postgres.backup.resource import _owners, _owners_add, _owners_write

    cluster = pb.Cluster("local-5433", tmp_path / "data", 5433)
    cluster.work_dir.mkdir(parents=True)
    assert _owners_add(cluster, "dev/local-5433/a", 365) == 365
    assert _owners_add(cluster, "pgitest/local-5433/b", 90) == 365  # a test stack does not shorten it
    assert _owners(cluster) == ["dev/local-5433/a", "pgitest/local-5433/b"]
    _owners_write(cluster, ["pgitest/local-5433/b"])
    assert _owners_add(cluster, "pgitest/local-5433/b", 90) == 90
