"""The content tier on a real server: monthly partitions, retention by dropping them, lz4 bodies."""

from __future__ import annotations

import uuid
from datetime import date

import psycopg
import pytest

from modules.postgres import migrations as mig
from modules.postgres.client import tenant_transaction
from tests.support.postgres import REPO_ROOT, TierDb, provision, teardown

pytestmark = pytest.mark.services

TENANT = uuid.UUID(int=0xC0)


@pytest.fixture(scope="module")
def content(devenv_env) -> TierDb:
    db = provision("content")
    yield db
    teardown(db)


def partitions(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'app.content_objects'::regclass ORDER BY 1"
    ).fetchall()
    return [row[0] for row in rows]


def test_months_ahead_are_added_fenced_and_out_of_the_apps_reach(content):
    with content.connect("migrator") as owner:
        created = [r[0] for r in owner.execute("SELECT internal.ensure_content_partitions('2031-01-15', 2)")]
        again = owner.execute("SELECT count(*) FROM internal.ensure_content_partitions('2031-01-15', 2)")
        assert again.fetchone()[0] == 0  # idempotent
    assert created == [
        "content_objects_2031_01",
        "attachments_2031_01",
        "content_objects_2031_02",
        "attachments_2031_02",
    ]
    with content.connect() as admin:
        assert mig.tenant_table_problems(admin) == []
        assert {"content_objects_2031_01", "content_objects_2031_02"} <= set(partitions(admin))
    with content.connect("app") as app, tenant_transaction(app, TENANT):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), app.transaction():
            app.execute("SELECT count(*) FROM partitions.content_objects_2031_01")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), app.transaction():
            app.execute("SELECT internal.ensure_content_partitions('2032-01-01', 1)")


def test_retention_drops_whole_months_bodies_and_attachments_together(content):
    with content.connect("migrator") as owner:
        owner.execute("SELECT internal.ensure_content_partitions('2020-03-01', 2)")
    with content.connect("app") as app, tenant_transaction(app, TENANT):
        for month in ("2020-03-10", "2020-04-10"):
            app.execute(
                "INSERT INTO app.content_objects (tenant_id, storage_key, created_at, content_text) "
                "VALUES (%s, %s, %s, 'old body')",
                [TENANT, f"old/{month}", month],
            )
            app.execute(
                "INSERT INTO app.attachments (tenant_id, storage_key, content_created_at, filename, "
                "size_bytes, "
                "content) VALUES (%s, %s, %s, 'a.pdf', 3, 'pdf')",
                [TENANT, f"old/{month}", month],
            )
    with content.connect("migrator") as owner:
        dropped = [
            r[0] for r in owner.execute("SELECT internal.drop_content_partitions_before('2020-04-01')")
        ]
    assert dropped == ["attachments_2020_03", "content_objects_2020_03"]
    with (
        content.connect("migrator") as owner,
        pytest.raises(psycopg.errors.InvalidParameterValue, match="current month"),
    ):
        owner.execute("SELECT internal.drop_content_partitions_before(current_date + 31)")
    with content.connect() as admin:
        assert "content_objects_2020_03" not in partitions(admin)
        assert "content_objects_2020_04" in partitions(admin)
        assert mig.baseline_problems(admin) == []  # retention is not drift
    with content.connect("app") as app, tenant_transaction(app, TENANT):
        keys = [
            r[0]
            for r in app.execute("SELECT storage_key FROM app.content_objects WHERE storage_key LIKE 'old/%'")
        ]
        assert keys == ["old/2020-04-10"]
        assert (
            app.execute("SELECT count(*) FROM app.attachments WHERE storage_key LIKE 'old/%'").fetchone()[0]
            == 1
        )


def test_bodies_are_stored_with_lz4(content):
    body = " ".join(f"line {n} of a long and repetitive e-mail body" for n in range(2000))
    with content.connect("app") as app, tenant_transaction(app, TENANT):
        app.execute(
            "INSERT INTO app.content_objects (tenant_id, storage_key, content_text, content_html) "
            "VALUES (%s, 'lz4/1', %s, %s)",
            [TENANT, body, f"<p>{body}</p>"],
        )
        row = app.execute(
            "SELECT pg_column_compression(content_text), pg_column_compression(content_html), "
            "pg_column_size(content_text) < octet_length(content_text) / 4 "
            "FROM app.content_objects WHERE storage_key = 'lz4/1'"
        ).fetchone()
    assert row == ("lz4", "lz4", True)


def test_partitions_cover_this_month_from_the_migration_on(content):
    this_month = f"content_objects_{date.today():%Y_%m}"
    with content.connect() as admin:
        assert this_month in partitions(admin)
    assert (REPO_ROOT / "schemas" / "content" / "0002_content_objects.sql").exists()
