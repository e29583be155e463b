"""Migration files, checksums and plans, without a server."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modules.errors import ValidationError
from modules.postgres import migrations as mig
from modules.postgres.resources import REPO_ROOT

TIERS = ("oltp", "content", "analytics", "queue")


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_bytes(text.encode())
    return folder


def entry(version: int, name: str, sql: str) -> mig.LedgerEntry:
    return mig.LedgerEntry(version, name, mig.sha256_text(sql), datetime(2026, 11, 1, tzinfo=UTC), "ci", 5)


def test_files_load_in_version_order_with_their_sha256(tmp_path):
    folder = write(tmp_path, {"0002_b.sql": "SELECT 2;", "0001_a.sql": "SELECT 1;", "README.md": "notes"})
    files = mig.load_dir(folder)
    assert [(f.version, f.name) for f in files] == [(1, "0001_a.sql"), (2, "0002_b.sql")]
    assert files[0].sha256 == mig.sha256_text("SELECT 1;")
    assert mig.manifest(files) == {"0001_a.sql": files[0].sha256, "0002_b.sql": files[1].sha256}


def test_crlf_line_endings_do_not_change_the_checksum(tmp_path):
    unix = mig.load_dir(write(tmp_path / "u", {"0001_a.sql": "SELECT 1;\nSELECT 2;\n"}))
    windows = mig.load_dir(write(tmp_path / "w", {"0001_a.sql": "SELECT 1;\r\nSELECT 2;\r\n"}))
    assert unix[0].sha256 == windows[0].sha256


def test_every_naming_problem_is_reported_at_once(tmp_path):
    folder = write(
        tmp_path,
        {
            "1_short.sql": "SELECT 1;",
            "0002_Upper.sql": "SELECT 1;",
            "0003_a.sql": "SELECT 1;",
            "0003_b.sql": "SELECT 1;",
            "0004_empty.sql": "  \n",
            "0005_tx.sql": "begin;\nSELECT 1;\ncommit;\n",
            "0000_zero.sql": "SELECT 1;",
        },
    )
    with pytest.raises(ValidationError) as caught:
        mig.load_dir(folder)
    reasons = "\n".join(caught.value.reasons)
    assert "1_short.sql: the name must be NNNN_<what>.sql" in reasons
    assert "0002_Upper.sql: the name must be" in reasons
    assert "0003_b.sql: version 0003 is also used by 0003_a.sql" in reasons
    assert "0004_empty.sql: the file is empty" in reasons
    assert "0005_tx.sql: remove BEGIN/COMMIT" in reasons
    assert "0000_zero.sql: versions start at 0001" in reasons


def test_a_missing_or_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        mig.load_dir(tmp_path / "nope")
    with pytest.raises(ValidationError) as caught:
        mig.load_dir(tmp_path)
    assert caught.value.reasons == ["no NNNN_<what>.sql file found"]


def test_dollar_quoted_commit_inside_a_function_is_not_transaction_control(tmp_path):
    text = "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n  PERFORM 1;\nEND\n$$;\n"
    assert mig.load_dir(write(tmp_path, {"0001_f.sql": text}))[0].name == "0001_f.sql"


def test_plan_lists_pending_files_and_refuses_edited_or_missing_ones(tmp_path):
    files = mig.load_dir(
        write(tmp_path, {"0001_a.sql": "SELECT 1;", "0002_b.sql": "SELECT 2;", "0003_c.sql": "x;"})
    )
    clean = mig.plan(files, {1: entry(1, "0001_a.sql", "SELECT 1;")})
    assert [f.name for f in clean.pending] == ["0002_b.sql", "0003_c.sql"]
    assert clean.problems() == []

    edited = mig.plan(files, {1: entry(1, "0001_a.sql", "SELECT 1; -- before the edit")})
    assert len(edited.changed) == 1 and edited.changed[0].startswith(
        "0001_a.sql: applied as 0001_a.sql with sha256"
    )
    assert "never edit an applied migration" in edited.changed[0]

    renamed = mig.plan(files, {1: entry(1, "0001_old_name.sql", "SELECT 1;")})
    assert renamed.changed and "applied as 0001_old_name.sql" in renamed.changed[0]

    orphan = mig.plan(files, {9: entry(9, "0009_gone.sql", "SELECT 9;")})
    assert orphan.orphans == ["0009_gone.sql: applied on 2026-11-01 but the file is gone; restore it"]


@pytest.mark.parametrize("tier", TIERS)
def test_the_tier_schemas_load_and_start_with_the_shared_foundation(tier):
    files = mig.load_dir(REPO_ROOT / "schemas" / tier)
    assert files[0].name == "0001_foundation.sql"
    foundation = (REPO_ROOT / "schemas" / "oltp" / "0001_foundation.sql").read_text()
    assert files[0].sql == foundation
    assert [f.version for f in files] == list(range(1, len(files) + 1))


@pytest.mark.parametrize("tier", TIERS)
def test_every_table_created_in_app_gets_tenant_rls_in_the_same_file(tier):
    """A static companion to the server-side lint: every CREATE TABLE app.x is named again, quoted, in the
    same file (that is how enable_tenant_rls('app.x') and the queue's loop over 'app.x' names take it)."""
    for migration in mig.load_dir(REPO_ROOT / "schemas" / tier):
        created = set(re.findall(r"CREATE TABLE app\.(\w+)", migration.sql))
        fenced = (
            set(re.findall(r"'app\.(\w+)'", migration.sql)) if "enable_tenant_rls" in migration.sql else set()
        )
        assert created - fenced <= {"users"}, (
            f"{migration.name}: {sorted(created - fenced)} without tenant RLS"
        )
