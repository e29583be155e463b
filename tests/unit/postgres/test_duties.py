"""Grant sets by tier and duty: valid, schema-wide, and keeping tenant-facing roles out of private schemas."""

from __future__ import annotations

import pytest

from modules.config.model import TIERS
from modules.postgres import admin
from modules.postgres.duties import GRANTS, TENANT_FACING, duties_for, grants_for, settings_for

# Schemas no tenant-facing role may be granted anything on.
PRIVATE = {"fleet", "internal", "pm_meta", "partitions", "worker", "reputation", "warmup"}
# Before duties existed every tier had these: oltp and content must not change (their Role resources would
# update for nothing), and for analytics and queue any change is an in-place update of the same resources.
LEGACY_APP = [
    {"on": "schema", "schema": "app", "privileges": ["USAGE"]},
    {"on": "schema", "schema": "platform", "privileges": ["USAGE"]},
    {"on": "schema", "schema": "app_private", "privileges": ["USAGE"]},
    {"on": "tables", "schema": "app", "privileges": ["DELETE", "INSERT", "SELECT", "UPDATE"]},
    {"on": "sequences", "schema": "app", "privileges": ["SELECT", "USAGE"]},
    {"on": "functions", "schema": "app", "privileges": ["EXECUTE"]},
    {"on": "functions", "schema": "app_private", "privileges": ["EXECUTE"]},
    {"on": "tables", "schema": "platform", "privileges": ["SELECT"]},
]
LEGACY_READONLY = [
    {"on": "schema", "schema": "app", "privileges": ["USAGE"]},
    {"on": "schema", "schema": "platform", "privileges": ["USAGE"]},
    {"on": "schema", "schema": "app_private", "privileges": ["USAGE"]},
    {"on": "tables", "schema": "app", "privileges": ["SELECT"]},
    {"on": "functions", "schema": "app_private", "privileges": ["EXECUTE"]},
    {"on": "tables", "schema": "platform", "privileges": ["SELECT"]},
]


def grant_map(tier: str, duty: str) -> dict[tuple[str, str], set[str]]:
    return {(g["on"], g["schema"]): set(g["privileges"]) for g in grants_for(tier, duty)}


@pytest.mark.parametrize(("tier", "duty"), sorted(GRANTS))
def test_every_grant_set_passes_the_role_check(tier, duty):
    assert admin.grant_problems(grants_for(tier, duty)) == []
    assert admin.settings_problems(settings_for(duty)) == []


def test_the_worker_duty_exists_in_the_queue_tier_only_and_reputation_and_warmup_in_oltp_only():
    assert {tier: duties_for(tier) for tier in TIERS} == {
        "oltp": ("app", "readonly", "reputation", "warmup"),
        "content": ("app", "readonly"),
        "analytics": ("app", "readonly"),
        "queue": ("app", "readonly", "worker"),
    }
    with pytest.raises(KeyError):
        grants_for("oltp", "worker")
    with pytest.raises(KeyError):
        grants_for("queue", "reputation")
    with pytest.raises(KeyError):
        grants_for("queue", "warmup")


def test_the_reputation_duty_executes_its_functions_only():
    assert grants_for("oltp", "reputation") == [
        {"on": "schema", "schema": "reputation", "privileges": ["USAGE"]},
        {"on": "functions", "schema": "reputation", "privileges": ["EXECUTE"]},
    ]


def test_the_warmup_duty_only_executes_warmup_functions():
    assert grant_map("oltp", "warmup") == {
        ("schema", "warmup"): {"USAGE"},
        ("functions", "warmup"): {"EXECUTE"},
    }
    assert settings_for("warmup")["search_path"] == "warmup, pg_catalog"


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("duty", TENANT_FACING)
def test_tenant_facing_roles_get_nothing_in_private_schemas(tier, duty):
    assert {schema for _kind, schema in grant_map(tier, duty)} & PRIVATE == set()


@pytest.mark.parametrize("tier", TIERS)
def test_readonly_only_reads(tier):
    for (kind, _schema), privileges in grant_map(tier, "readonly").items():
        assert privileges <= {"USAGE", "SELECT", "EXECUTE"}
        assert kind != "sequences"


def test_the_audit_trail_is_append_only_for_the_app():
    app, readonly = grant_map("analytics", "app"), grant_map("analytics", "readonly")
    assert app[("tables", "audit")] == {"INSERT"}
    assert ("sequences", "audit") not in app  # identity columns need no right on their sequence
    assert readonly[("tables", "audit")] == {"SELECT"}


def test_the_queue_app_reads_its_tables_and_the_worker_only_executes():
    app = grant_map("queue", "app")
    assert app[("tables", "app")] == {"SELECT"}
    assert ("sequences", "app") not in app
    assert app[("functions", "app")] == app[("functions", "app_private")] == {"EXECUTE"}
    assert app[("tables", "platform")] == {"SELECT"}
    assert grant_map("queue", "worker") == {
        ("schema", "worker"): {"USAGE"},
        ("functions", "worker"): {"EXECUTE"},
    }
    assert settings_for("worker")["search_path"] == "worker, pg_catalog"


@pytest.mark.parametrize("tier", ["oltp", "content"])
def test_unchanged_tiers_keep_their_grants_byte_for_byte(tier):
    assert grants_for(tier, "app") == LEGACY_APP
    retention_read = [
        {"on": "schema", "schema": "retention", "privileges": ["USAGE"]},
        {"on": "tables", "schema": "retention", "privileges": ["SELECT"]},
    ]
    # Content's readonly also reads the record of retention runs (for the exporter), nothing else new.
    assert grants_for(tier, "readonly") == LEGACY_READONLY + (retention_read if tier == "content" else [])


@pytest.mark.parametrize("tier", ["content", "queue", "analytics"])
def test_only_readonly_reads_the_retention_record_and_nobody_may_run_it(tier):
    assert grant_map(tier, "readonly")[("tables", "retention")] == {"SELECT"}
    assert ("functions", "retention") not in grant_map(tier, "readonly")
    for duty in ("app", "worker"):
        if (tier, duty) in GRANTS:
            assert not any(grant["schema"] == "retention" for grant in grants_for(tier, duty)), duty


def test_grants_for_returns_copies():
    grants_for("oltp", "app")[0]["privileges"].append("CREATE")
    assert grants_for("oltp", "app") == LEGACY_APP
