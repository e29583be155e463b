"""Backups with PITR through the real S3 API: pgBackRest 2.45 against moto (TLS), a private PostgreSQL 15.

The cluster and the S3 endpoint are the test's own (it restarts and kills them); the stanza is made by the
``BackupStanza`` provider as ``pulumi up`` would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from devenv.base import devenv_root
from devenv.s3 import BUCKET, S3Service
from modules.errors import DevenvError
from modules.postgres.backup import pgbackrest as pb
from modules.postgres.backup import restore as rs
from modules.postgres.backup.resource import BackupStanzaProvider, stanza_name
from modules.postgres.client import connect
from tests.support.postgres import private_cluster, provision

pytestmark = pytest.mark.skipif(not Path(pb.PGBACKREST).exists(), reason="pgbackrest is not installed")


@pytest.fixture(scope="module")
def stack():
    """A private s3 + cluster with archiving on, one oltp tier, and its stanza with a first full backup."""
    root = Path(tempfile.mkdtemp(prefix="backup-s3-", dir=devenv_root()))
    s3 = S3Service(root=root, port=rs.free_port())
    s3.start()
    saved = {key: os.environ.get(key) for key in s3.env()}
    os.environ.update(s3.env())
    try:
        with private_cluster("backup-pg-") as service:
            db = provision("oltp", prefix="pm_itest")
            props = {
                "stack": "itest",
                "stanza": stanza_name(service.port),
                "tiers": ["oltp"],
                "retention_days": 90,
            }
            provider = BackupStanzaProvider()
            # What `python -m devenv start s3` does for the devenv cluster: archive_mode on, one restart.
            (service.data_dir / pb.CONF_DIR / pb.ARCHIVE_CONF).write_text(
                "archive_mode = on\narchive_command = '/bin/true'\n"
            )
            service.stop()
            service.start()
            cluster = pb.cluster_of(db.target, props["stanza"])
            created = provider.create(props)
            yield {"s3": s3, "service": service, "db": db, "cluster": cluster, "provider": provider,
                   "props": props, "id": created.id}  # fmt: skip
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        s3.stop()
        shutil.rmtree(root, ignore_errors=True)


def _plans(target, database) -> list[str]:
    with connect(target, database) as conn:
        return [r[0] for r in conn.execute("SELECT slug FROM platform.plans ORDER BY slug")]


def test_first_backup_and_read_without_drift(stack):
    entry = pb.info(stack["cluster"])
    assert pb.last_backup(entry)["type"] == "full"
    read = stack["provider"].read(stack["id"], {**stack["props"], "drift": []})
    assert read.outs["drift"] == []


def test_pitr_restores_exactly_the_rows_before_the_time(stack):
    db, cluster = stack["db"], stack["cluster"]
    with connect(db.target, db.database) as conn:
        for slug in ("pitr-a1", "pitr-a2"):
            conn.execute(
                "INSERT INTO platform.plans (slug, name, max_leads) VALUES (%s, %s, 1)", [slug, slug]
            )
        time.sleep(1.1)
        between = conn.execute(
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US+00')"
        ).fetchone()[0]
        time.sleep(1.1)
        for slug in ("pitr-b1", "pitr-b2"):
            conn.execute(
                "INSERT INTO platform.plans (slug, name, max_leads) VALUES (%s, %s, 1)", [slug, slug]
            )
    rs.switch_and_wait(db.target)
    target = cluster.data_dir.parent / "pitr-restore"
    restored = rs.restore(cluster, target, to_time=between)
    try:
        slugs = [s for s in _plans(restored.target, db.database) if s.startswith("pitr-")]
        assert slugs == ["pitr-a1", "pitr-a2"]
    finally:
        restored.discard()


def test_drill_passes(stack):
    report = rs.drill(stack["cluster"], stack["db"].database)
    assert report.ok, report.problems
    assert report.restored is not None and report.restored.counts == report.source.counts
    assert report.source.ledger and report.restored.ledger == report.source.ledger
    assert {"snapshot", "archive", "restore", "compare", "total"} <= set(report.phases)


def test_restore_refuses_a_live_cluster_and_a_folder_with_files(stack):
    cluster = stack["cluster"]
    with pytest.raises(rs.RestoreError, match="live cluster"):
        rs.restore(cluster, cluster.data_dir)
    busy = cluster.data_dir.parent / "busy-folder"
    busy.mkdir(exist_ok=True)
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(rs.RestoreError, match="not empty"):
        rs.restore(cluster, busy)
    assert (busy / "keep.txt").read_text() == "mine"
    assert rs.live_cluster(cluster.data_dir)


def test_kill_the_primary_during_a_backup(stack):
    """SIGKILL the postmaster mid-backup: the backup fails, is not listed as usable, the next one succeeds."""
    cluster, service, db = stack["cluster"], stack["service"], stack["db"]
    with connect(db.target, db.database) as conn:  # something to copy for a while
        conn.execute("CREATE TABLE IF NOT EXISTS public.backup_ballast AS SELECT g, repeat('x', 500) AS pad "
                     "FROM generate_series(1, 400000) g")  # fmt: skip
    before = [b["label"] for b in pb.info(cluster)["backup"]]
    command = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--", pb.PGBACKREST,
               f"--config={cluster.config_file}", f"--stanza={cluster.stanza}", "backup", "--type=full"]  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "PGHOST": "127.0.0.1", "PGPASSFILE": str(cluster.work_dir / "pgpass")}
    backup = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Wait until the backup has started copying (pg_backup_start ran), then kill the postmaster.
    deadline = time.monotonic() + 60
    with connect(db.target) as conn:
        while time.monotonic() < deadline:
            if conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgBackRest%%'"
            ).fetchone()[0]:
                break
            time.sleep(0.05)
    time.sleep(0.5)
    os.kill(service.pid(), signal.SIGKILL)
    output, _ = backup.communicate(timeout=300)
    assert backup.returncode != 0, output
    # The killed postmaster's children notice and exit; until then the lock file holds.
    for _ in range(30):
        try:
            service.start()
            break
        except DevenvError:
            time.sleep(1)
    entry = pb.info(cluster)
    assert [b["label"] for b in entry["backup"]] == before, "a broken backup is listed as usable"
    pb.run(cluster, "backup", "--type=full")
    after = pb.info(cluster)["backup"]
    assert len(after) == len(before) + 1 and not after[-1]["error"]
    # The drill still restores from good backups only.
    assert rs.drill(cluster, db.database).ok


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """``penguinmails ARGS`` in this process, with the dev settings the devenv variables point at."""
    import sys

    from modules.cli import db_cmd, main
    from modules.providers import ProviderSettings

    monkeypatch.setattr(db_cmd, "stack_settings", lambda stack, cwd: ProviderSettings())
    monkeypatch.setattr(sys, "argv", ["penguinmails", *args])
    capsys.readouterr()
    try:
        main.run()
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_cli_info_drill_and_refusals(stack, monkeypatch, capsys):
    code, out = _cli(monkeypatch, capsys, "db", "info", "--stack", "itest", "--tier", "oltp")
    assert code == 0 and stack["cluster"].stanza in out and "full" in out
    code, out = _cli(monkeypatch, capsys, "db", "restore-drill", "--stack", "itest", "--tier", "oltp")
    assert code == 0, out
    assert "passed" in out and "platform.plans" in out and "total" in out
    live = str(stack["cluster"].data_dir)
    code, out = _cli(monkeypatch, capsys, "db", "restore", "--stack", "itest", "--target", live)
    assert code != 0 and "live cluster" in out and "Traceback" not in out
    code, out = _cli(
        monkeypatch, capsys, "db", "restore", "--stack", "itest", "--target", "/tmp/x", "--in-place"
    )
    assert code != 0 and "--yes" in out


def test_metrics_age_and_last_result(stack):
    from modules.monitoring.backup_metrics import BackupReader, BackupSource

    cluster = stack["cluster"]
    families = {
        f.name: f
        for f in BackupReader([BackupSource(stanza=cluster.stanza, work_dir=str(cluster.work_dir))]).collect()
    }
    ok = families["penguinmails_backup_last_ok"].samples[0]
    assert ok.labels == {"stanza": cluster.stanza} and ok.value == 1.0
    assert 0 <= families["penguinmails_backup_age_seconds"].samples[0].value < 3600
    pb.record_result(cluster, False, "disk full")
    families = {
        f.name: f
        for f in BackupReader([BackupSource(stanza=cluster.stanza, work_dir=str(cluster.work_dir))]).collect()
    }
    assert families["penguinmails_backup_last_ok"].samples[0].value == 0.0
    pb.record_result(cluster, True)


def test_moto_restart_is_drift_and_update_repairs_it(stack):
    """moto keeps the bucket in memory: after a restart read reports drift, and update makes a new stanza."""
    s3, provider, props = stack["s3"], stack["provider"], {**stack["props"], "drift": []}
    s3.stop()
    s3.start()
    read = provider.read(stack["id"], props)
    assert read.outs["drift"] and "missing" in read.outs["drift"][0]
    updated = provider.update(stack["id"], read.outs, props)
    assert updated.outs["drift"] == [] and updated.outs["last_label"]
    assert provider.read(stack["id"], props).outs["drift"] == []


def test_corrupted_backup_file_fails_the_drill_with_a_clear_message(stack):
    cluster, s3 = stack["cluster"], stack["s3"]
    client = s3.client()
    label = pb.last_backup(pb.info(cluster))["label"]
    prefix = f"penguinmails/{cluster.stanza}/backup/{cluster.stanza}/{label}/"
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
    victims = [k for k in keys if "/pg_data/" in k or "/bundle/" in k]
    assert victims, keys
    for key in victims:
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        middle = len(body) // 2
        client.put_object(
            Bucket=BUCKET,
            Key=key,
            Body=body[:middle] + bytes(b ^ 0xFF for b in body[middle : middle + 64]) + body[middle + 64 :],
        )
    report = rs.drill(cluster, stack["db"].database)
    assert not report.ok
    assert any("restore failed" in p for p in report.problems), report.problems
    assert not any(p.name.startswith("drill-") for p in cluster.data_dir.parent.iterdir())


def test_backup_scheduler_runs_a_due_job(tmp_path):
    """The devenv service runs `penguinmails ARGS` in the minute its cron matches, and logs the result."""
    import json

    from devenv.backup_scheduler import BackupSchedulerService

    service = BackupSchedulerService(root=tmp_path)
    assert service.status().idle
    service.install(
        json.dumps({"cwd": str(tmp_path), "jobs": [{"schedule": "* * * * *", "args": ["db", "--help"]}]})
    )
    try:
        deadline = time.monotonic() + 90
        log = service.dir / "backup-scheduler.log"
        while time.monotonic() < deadline and "exit 0" not in (log.read_text() if log.exists() else ""):
            time.sleep(1)
        assert "db --help: exit 0" in log.read_text()
    finally:
        service.stop()
    assert not service.running()
