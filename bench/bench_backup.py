"""Backup and restore of a ~1 GB OLTP database: pgBackRest full backup to S3 (moto over TLS), restore of the
latest backup into a new cluster, and a PITR restore to a time between two writes.

Runs on a private PostgreSQL and a private S3 endpoint beside the devenv (it restarts its cluster for
``archive_mode``), seeded as bench/bench_postgres.py seeds (scale: ``PM_BENCH_BACKUP_TENANTS`` tenants,
500 leads and 100 campaigns each; 6,000 tenants make about 1 GB). Times include starting the restored
cluster and waiting for its promotion.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from bench import bench_postgres as bp
from devenv.base import devenv_root
from devenv.postgres import PostgresService
from devenv.s3 import S3Service
from modules.postgres.backup import pgbackrest as pb
from modules.postgres.backup import restore as rs
from modules.postgres.client import connect
from modules.providers import ProviderSettings

TENANTS = int(os.environ.get("PM_BENCH_BACKUP_TENANTS", "6000"))


def _timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - started, 1)


def run() -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-backup-", dir=devenv_root()))
    s3 = S3Service(root=root, port=rs.free_port())
    postgres = PostgresService(root=root, port=rs.free_port())
    saved = dict(os.environ)
    result: dict[str, object] = {"tenants": TENANTS}
    try:
        s3.start()
        postgres.start()
        os.environ.update(s3.env())
        os.environ.update(postgres.env())
        target = bp.server_target(ProviderSettings(), "oltp")
        bp.TENANTS = TENANTS
        db = bp.Tier(target, "oltp", "pm_bench_backup")
        db.create()
        db.migrate()
        db.grant_app()
        seed, result["seed_s"] = _timed(lambda: bp.seed_oltp(db))
        with db.connect() as conn:
            result["database_mb"] = round(
                conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20
            )
        cluster = pb.cluster_of(target, "bench")
        pb.install(cluster, pb.repo_from_settings(ProviderSettings(), cluster.stanza), 90)

        def restart():
            postgres.stop()
            postgres.start()

        pb.enable_archiving(cluster, restart)
        pb.run(cluster, "stanza-create")
        _, result["full_backup_s"] = _timed(lambda: pb.run(cluster, "backup", "--type=full"))
        last = pb.last_backup(pb.info(cluster))
        result["backup_repo_mb"] = round(last["info"]["repository"]["delta"] / 2**20)
        # Two writes with a time between them, then everything archived.
        with connect(target, db.database) as conn:
            conn.execute("CREATE TABLE public.bench_marks (n int)")
            conn.execute("INSERT INTO public.bench_marks SELECT generate_series(1, 1000)")
            time.sleep(1.1)
            between = conn.execute(
                "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US+00')"
            ).fetchone()[0]
            time.sleep(1.1)
            conn.execute("INSERT INTO public.bench_marks SELECT generate_series(1001, 2000)")
        rs.switch_and_wait(target)
        for name, kwargs in (("restore_latest_s", {}), ("restore_pitr_s", {"to_time": between})):
            restored, seconds = _timed(
                lambda kw=kwargs: rs.restore(cluster, root / f"restore-{len(result)}", **kw)
            )
            try:
                with connect(restored.target, db.database) as conn:
                    marks = conn.execute("SELECT count(*) FROM public.bench_marks").fetchone()[0]
                    leads = conn.execute("SELECT count(*) FROM app.leads").fetchone()[0]
            finally:
                restored.discard()
            result[name] = seconds
            result[name.replace("_s", "_rows")] = {"bench_marks": marks, "leads": leads}
        result["seed"] = seed
        return result
    finally:
        os.environ.clear()
        os.environ.update(saved)
        try:
            postgres.stop()
        finally:
            postgres.discard()
            s3.stop()
            shutil.rmtree(root, ignore_errors=True)
