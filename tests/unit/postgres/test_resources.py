"""The providers' check and diff, called directly with plain dicts (no engine, no server)."""

from __future__ import annotations

import pytest
from pulumi.runtime import rpc

from modules.postgres import migrations as mig
from modules.postgres.duties import grants_for, settings_for
from modules.postgres.resources import (
    DatabaseProvider,
    ExtensionProvider,
    RoleProvider,
    SchemaMigrationsProvider,
    _files,
)


def failures(result) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for failure in result.failures:
        found.setdefault(failure.property, []).append(failure.reason)
    return found


def role(**overrides) -> dict:
    props = {
        "tier": "oltp",
        "role": "pm_dev_oltp_app",
        "password": "pw-123456789012",
        "login": True,
        "connection_limit": 100,
        "settings": settings_for("app"),
        "database": "pm_dev_oltp",
        "database_privileges": ["CONNECT"],
        "grants": grants_for("oltp", "app"),
        "grantor": "pm_dev_oltp_migrator",
        "drift": [],
    }
    return {**props, **overrides}


def migrations(**overrides) -> dict:
    props = {
        "tier": "oltp",
        "database": "pm_dev_oltp",
        "owner": "pm_dev_oltp_migrator",
        "directory": "schemas/oltp",
        "migrations": mig.manifest(_files("schemas/oltp")),
        "drift": [],
        "actor": "pulumi:penguinmails/dev",
        "lock_timeout_seconds": 60,
    }
    return {**props, **overrides}


def test_a_valid_role_passes_check():
    assert RoleProvider().check({}, role()).failures == []


def test_role_check_names_every_bad_field():
    bad = role(
        tier="mysql",
        role="Bad-Name",
        password=None,
        connection_limit=-5,
        settings={"work_mem": "", "shared_buffers": "1GB"},
        database_privileges=["CONNECT", "SUPERPOWER"],
        grants=[
            {"on": "tables", "schema": "app", "privileges": ["SELECT", "TRUNCATE"]},
            {"on": "views", "schema": "app", "privileges": ["SELECT"]},
            {"on": "schema", "schema": "app", "privileges": ["SELECT"]},
        ],
    )
    found = failures(RoleProvider().check({}, bad))
    assert "tier" in found and "role" in found and "password" in found and "connection_limit" in found
    assert any("TRUNCATE is never granted" in r for r in found["grants"])
    assert any("views" in r for r in found["grants"])
    assert any("'SELECT' does not apply to schema" in r for r in found["grants"])
    assert any("shared_buffers" in r for r in found["settings"]) and any(
        "work_mem" in r for r in found["settings"]
    )
    assert found["database_privileges"] == ["unknown privilege(s) SUPERPOWER"]


def test_role_grants_need_a_database_and_a_grantor():
    found = failures(RoleProvider().check({}, role(database=None, grantor=None)))
    assert "database" in found and "grantor" in found


def test_role_diff_replaces_only_on_a_new_name():
    provider = RoleProvider()
    assert provider.diff("r", role(), role()).changes is False
    renamed = provider.diff("r", role(), role(role="pm_dev_oltp_app2"))
    assert renamed.changes and renamed.replaces == ["role"]
    new_password = provider.diff("r", role(), role(password="another-password-1"))
    assert new_password.changes and new_password.replaces == []
    drifted = provider.diff("r", role(drift=["pm_dev_oltp_app has TRUNCATE on app.leads"]), role())
    assert drifted.changes and drifted.replaces == []
    # Grants by duty: an existing role of the old single grant set is updated in place, never replaced.
    regranted = provider.diff(
        "r",
        role(tier="analytics", grants=grants_for("oltp", "app")),
        role(tier="analytics", grants=grants_for("analytics", "app")),
    )
    assert regranted.changes and regranted.replaces == []
    # The server spells search_path its own way; the same setting is not a change.
    spelled = role(settings={**settings_for("app"), "search_path": '"app","platform","public"'})
    assert provider.diff("r", spelled, role()).changes is False


def test_database_and_extension_diffs():
    base = {"tier": "oltp", "database": "pm_dev_oltp", "owner": "pm_dev_oltp_migrator", "drift": []}
    assert DatabaseProvider().diff("d", base, {**base, "database": "other"}).replaces == ["database"]
    owner = DatabaseProvider().diff("d", base, {**base, "owner": "someone_else"})
    assert owner.changes and owner.replaces == []
    ext = {"tier": "oltp", "database": "pm_dev_oltp", "extension": "citext", "schema": "public", "drift": []}
    assert ExtensionProvider().diff("e", ext, {**ext, "extension": "pgcrypto"}).replaces == ["extension"]
    assert failures(ExtensionProvider().check({}, {**ext, "extension": "pg_evil"}))["extension"]


def test_migrations_check_accepts_the_repository_schema_and_refuses_escapes():
    provider = SchemaMigrationsProvider()
    assert provider.check({}, migrations()).failures == []
    found = failures(provider.check({}, migrations(directory="../../etc", lock_timeout_seconds=0)))
    assert "directory" in found and "lock_timeout_seconds" in found
    stale = migrations(migrations={"0001_foundation.sql": "0" * 64})
    assert "does not match the files on disk" in failures(provider.check({}, stale))["migrations"][0]


def test_migrations_diff_shows_a_new_file_as_a_change():
    provider = SchemaMigrationsProvider()
    news = migrations()
    olds = migrations(migrations=dict(list(news["migrations"].items())[:-1]))
    result = provider.diff("m", olds, news)
    assert result.changes and result.replaces == []
    recorded = {**news, "fingerprinted": True, "rls_coverage": {}}
    assert provider.diff("m", recorded, news).changes is False
    # State from before the audit's RLS coverage: one in-place update records it.
    uncovered = provider.diff("m", {**news, "fingerprinted": True}, news)
    assert uncovered.changes is True and uncovered.replaces == []
    assert provider.diff(
        "m", migrations(drift=["app.leads: row level security is not enabled"]), news
    ).changes
    # State from before the security fingerprint: one in-place update records it.
    before = provider.diff("m", news, news)
    assert before.changes is True and before.replaces == []


def test_migrations_diff_refuses_an_edited_or_deleted_applied_file():
    provider = SchemaMigrationsProvider()
    news = migrations()
    edited = dict(news["migrations"], **{"0002_platform.sql": "f" * 64})
    with pytest.raises(
        mig.MigrationChecksumMismatch, match=r"0002_platform.sql: applied with sha256 ffffffffffff"
    ):
        provider.diff("m", migrations(migrations=edited), news)
    extra = dict(news["migrations"], **{"0099_dropped.sql": "a" * 64})
    with pytest.raises(
        mig.MigrationChecksumMismatch, match=r"0099_dropped\.sql: applied, but the file is gone"
    ):
        provider.diff("m", migrations(migrations=extra), news)


def test_migrations_diff_tolerates_unknown_values_in_a_preview():
    provider = SchemaMigrationsProvider()
    result = provider.diff("m", migrations(), migrations(migrations=rpc.UNKNOWN, owner=rpc.UNKNOWN))
    assert result.changes is True
    assert provider.check({}, migrations(owner=rpc.UNKNOWN)).failures == []


def test_a_refresh_diff_against_a_ledger_behind_the_files_is_not_an_error():
    """During a refresh the engine diffs the state with what read() found: the ledger, not the files."""
    provider = SchemaMigrationsProvider()
    state = migrations()
    ledger_behind = migrations(migrations=dict(list(state["migrations"].items())[:-1]))
    result = provider.diff("m", state, ledger_behind)
    assert result.changes is True


def test_a_hosted_database_name_may_use_capitals_and_hyphens_but_roles_may_not():
    ok = {"tier": "oltp", "database": "PenguinMails-OLTP", "owner": "pm_prod_oltp_migrator", "drift": []}
    assert DatabaseProvider().check({}, ok).failures == []
    assert failures(DatabaseProvider().check({}, {**ok, "database": "bad name;"}))["database"]
    assert failures(RoleProvider().check({}, role(role="Pm-App")))["role"]
