"""The PostgresTier component under Pulumi mocks: names, roles, grants, ordering and secret outputs."""

from __future__ import annotations

import pulumi
import pytest

from modules.config.model import PostgresTierConfig


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(args)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}

    def by_name(self, name: str) -> pulumi.runtime.MockResourceArgs:
        return next(r for r in self.resources if r.name == name)


@pytest.fixture
def mocks():
    recording = RecordingMocks()
    pulumi.runtime.set_mocks(recording, project="penguinmails", stack="dev", preview=False)
    return recording


PASSWORDS = {"migrator": "m-password-1234", "app": "a-password-1234", "readonly": "r-password-1234"}
OLTP_PASSWORDS = {**PASSWORDS, "reputation": "p-password-1234", "warmup": "wu-password-1234"}


def test_default_prefix_is_safe_for_any_stack_name():
    from modules.postgres.component import default_prefix

    assert default_prefix("dev") == "pm_dev"
    assert default_prefix("Prod-EU.1") == "pm_prod_eu_1"
    assert len(default_prefix("x" * 80)) <= 30


@pulumi.runtime.test
def test_a_local_tier_declares_roles_database_migrations_and_a_secret_url(mocks):
    from modules.postgres.component import PostgresTier
    from modules.postgres.duties import grants_for

    tier = PostgresTier("pm-oltp", "oltp", PostgresTierConfig(), OLTP_PASSWORDS)

    def check(args):
        url, secret, warmup_url, warmup_secret, _pooled = args
        types = sorted(r.typ.rsplit(":", 1)[-1] for r in mocks.resources if r.custom)
        assert types == [
            "Database",
            "Extension",
            "Extension",
            "PoolerDatabase",
            "Role",
            "Role",
            "Role",
            "Role",
            "Role",
            "SchemaMigrations",
        ]
        warmup = mocks.by_name("pm-oltp-warmup")
        assert warmup.inputs["grants"] == grants_for("oltp", "warmup")
        assert warmup.inputs["settings"]["search_path"] == "warmup, pg_catalog"
        assert warmup_url.startswith("postgresql://pm_dev_oltp_warmup:wu-password-1234@") and warmup_secret
        app = mocks.by_name("pm-oltp-app")
        assert app.inputs["role"] == "pm_dev_oltp_app" and app.inputs["grants"] == grants_for("oltp", "app")
        assert app.inputs["grantor"] == "pm_dev_oltp_migrator"
        assert mocks.by_name("pm-oltp-readonly").inputs["grants"] == grants_for("oltp", "readonly")
        assert tier.worker is None and tier.worker_url is None
        reputation = mocks.by_name("pm-oltp-reputation")
        assert reputation.inputs["role"] == "pm_dev_oltp_reputation"
        assert reputation.inputs["grants"] == grants_for("oltp", "reputation")
        assert tier.reputation_url is not None
        assert mocks.by_name("pm-oltp-readonly").inputs["settings"]["default_transaction_read_only"] == "on"
        database = mocks.by_name("pm-oltp-database")
        inputs = {k: v for k, v in database.inputs.items() if k != "__provider"}
        assert inputs == {
            "tier": "oltp",
            "database": "pm_dev_oltp",
            "owner": "pm_dev_oltp_migrator",
            "drift": [],
        }
        migrations = mocks.by_name("pm-oltp-migrations")
        assert migrations.inputs["directory"] == "schemas/oltp"
        assert "0001_foundation.sql" in migrations.inputs["migrations"]
        assert url == "postgresql://pm_dev_oltp_app:a-password-1234@127.0.0.1:5433/pm_dev_oltp?sslmode=prefer"
        assert secret is True

    return pulumi.Output.all(
        tier.app_url,
        pulumi.Output.is_secret(tier.app_url),
        tier.warmup_url,
        pulumi.Output.is_secret(tier.warmup_url),
        tier.app_pooled_url,  # after the pooler's entry: every resource is declared by then
    ).apply(check)


@pulumi.runtime.test
def test_a_server_tier_with_an_existing_database_does_not_create_one(mocks):
    from modules.postgres.component import PostgresTier

    config = PostgresTierConfig.model_validate(
        {
            "url": "postgresql://admin@db.example.com:5432/nile_oltp?sslmode=verify-full",
            "create_database": False,
            "name_prefix": "pm",
        }
    )
    tier = PostgresTier("pm-oltp", "oltp", config, OLTP_PASSWORDS)

    def check(url):
        assert not [r for r in mocks.resources if r.typ.endswith(":Database")]
        migrator = mocks.by_name("pm-oltp-migrator")
        assert migrator.inputs["database"] == "nile_oltp"
        assert migrator.inputs["database_privileges"] == ["CONNECT", "CREATE", "TEMPORARY"]
        assert url.startswith(
            "postgresql://pm_oltp_app:a-password-1234@db.example.com:5432/nile_oltp?sslmode=verify-full"
        )

    return tier.app_url.apply(check)


QUEUE_PASSWORDS = {**PASSWORDS, "worker": "w-password-1234"}


@pulumi.runtime.test
def test_the_queue_tier_declares_a_worker_role_with_a_secret_url(mocks):
    from modules.postgres.component import PostgresTier
    from modules.postgres.duties import grants_for

    tier = PostgresTier("pm-queue", "queue", PostgresTierConfig(), QUEUE_PASSWORDS)

    def check(args):
        url, secret = args
        worker = mocks.by_name("pm-queue-worker")
        assert worker.inputs["role"] == "pm_dev_queue_worker"
        assert worker.inputs["grants"] == grants_for("queue", "worker")
        assert worker.inputs["connection_limit"] == 64
        assert worker.inputs["settings"]["search_path"] == "worker, pg_catalog"
        assert worker.inputs["grantor"] == "pm_dev_queue_migrator"
        assert (
            url
            == "postgresql://pm_dev_queue_worker:w-password-1234@127.0.0.1:5433/pm_dev_queue?sslmode=prefer"
        )
        assert secret is True
        roles = sorted(r.name for r in mocks.resources if r.typ.endswith(":Role"))
        assert roles == ["pm-queue-app", "pm-queue-migrator", "pm-queue-readonly", "pm-queue-worker"]

    return pulumi.Output.all(tier.worker_url, pulumi.Output.is_secret(tier.worker_url)).apply(check)


@pulumi.runtime.test
def test_retained_tiers_schedule_daily_retention_with_their_days_unless_external(mocks):
    from modules.postgres.component import PostgresTier

    PostgresTier("pm-content", "content", PostgresTierConfig(), PASSWORDS)
    PostgresTier("pm-analytics", "analytics", PostgresTierConfig(data_retention_days=400), PASSWORDS)
    PostgresTier("pm-queue", "queue", PostgresTierConfig(retention_schedule="external"), QUEUE_PASSWORDS)
    tier = PostgresTier("pm-oltp", "oltp", PostgresTierConfig(), OLTP_PASSWORDS)

    def check(_):
        jobs = {r.name: r.inputs for r in mocks.resources if r.typ.endswith(":RetentionSchedule")}
        assert set(jobs) == {"pm-content-retention-schedule", "pm-analytics-retention-schedule"}
        content = jobs["pm-content-retention-schedule"]
        assert content["command"] == "CALL retention.run(2555, 5000)"
        assert (content["username"], content["database"]) == ("pm_dev_content_migrator", "pm_dev_content")
        assert jobs["pm-analytics-retention-schedule"]["command"] == "CALL retention.run(400, 5000)"

    return tier.app_url.apply(check)
