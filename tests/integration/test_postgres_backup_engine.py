"""The BackupStanza through the real Pulumi engine: up backs up, a second preview shows nothing, a moto
restart is drift that the next up repairs, destroy deletes the stanza it made.

On a private PostgreSQL and a private S3 endpoint (the devenv variables point the stack at them), so the
shared dev cluster's archiving is left alone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import redis

from devenv.base import devenv_root
from devenv.s3 import S3Service
from modules.postgres.backup import pgbackrest as pb
from modules.postgres.backup import restore as rs
from modules.postgres.backup.resource import stanza_name
from tests.integration.test_postgres_engine import postgres_changes
from tests.support.engine import project_stack
from tests.support.postgres import private_cluster

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(not Path(pb.PGBACKREST).exists(), reason="no pgbackrest"),
]
QUEUE_USER = "pm-bkitest-queue"


@pytest.fixture
def private_s3():
    root = Path(tempfile.mkdtemp(prefix="backup-engine-s3-", dir=devenv_root()))
    s3 = S3Service(root=root, port=rs.free_port())
    s3.start()
    saved = {key: os.environ.get(key) for key in s3.env()}
    os.environ.update(s3.env())
    try:
        yield s3
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        s3.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_up_backs_up_preview_is_quiet_drift_repaired_destroy(tmp_path, devenv_env, private_s3):
    with private_cluster("backup-engine-pg-") as service:
        # What `python -m devenv start s3` does for the devenv cluster: archive_mode on, one restart.
        conf = service.data_dir / pb.CONF_DIR / pb.ARCHIVE_CONF
        conf.write_text("archive_mode = on\narchive_command = '/bin/true'\n")
        service.stop()
        service.start()
        stack = project_stack(
            tmp_path,
            "bkitest",
            config={
                "environment": "dev",
                "redis": {"queue_user": QUEUE_USER, "port": 6390},
                "postgres": {
                    "oltp": {
                        "port": service.port,
                        "pooling": False,
                    },  # the devenv pooler serves the shared cluster
                    **{tier: {"enabled": False} for tier in ("content", "analytics", "queue")},
                },
            },
            extra_env={**service.env(), **private_s3.env()},
        )
        try:
            up = stack.up(color="never")
            assert up.summary.result == "succeeded"
            info = pb.info(pb.cluster_of(rs.ServerTarget("127.0.0.1", service.port, "postgres",
                                                         service.env()["PENGUINMAILS_POSTGRES_ADMIN_PASSWORD"]),
                                         stanza_name(service.port)))  # fmt: skip
            assert pb.last_backup(info)["type"] == "full"
            stack.preview(color="never", expect_no_changes=True)
            stack.refresh(color="never")
            assert postgres_changes(stack) == []

            # moto keeps the bucket in memory: a restart loses the stanza; refresh sees it, up repairs it.
            private_s3.stop()
            private_s3.start()
            stack.refresh(color="never")
            assert [op for op, name in postgres_changes(stack) if "BackupStanza" in name] == ["update"]
            stack.up(color="never")
            stack.refresh(color="never")
            assert postgres_changes(stack) == []
        finally:
            stack.destroy(color="never")
            stack.workspace.remove_stack("bkitest")
            redis.Redis(
                host=devenv_env["PENGUINMAILS_REDIS_HOST"],
                port=int(devenv_env["PENGUINMAILS_REDIS_PORT"]),
                password=devenv_env["PENGUINMAILS_REDIS_ADMIN_PASSWORD"],
            ).execute_command("ACL", "DELUSER", QUEUE_USER)
        # destroy deleted the stanza it made, and the archive settings with it.
        assert not conf.exists()
