"""PgBouncer pieces without a server: config defaults, the component's pooled URLs, the provider's input
checks, the databases file, and the lookup function's text."""

from __future__ import annotations

import socket
import threading

import pulumi
import pytest
from pydantic import ValidationError

from modules.config.model import PostgresConfig, PostgresTierConfig
from modules.postgres import pooler as pgb
from modules.providers import ProviderSettings
from tests.unit.postgres.test_component import OLTP_PASSWORDS, PASSWORDS, RecordingMocks


@pytest.fixture
def mocks():
    recording = RecordingMocks()
    pulumi.runtime.set_mocks(recording, project="penguinmails", stack="dev", preview=False)
    return recording


def test_pooling_is_on_with_the_issue_13_pool_sizes_and_bad_sizes_name_the_field():
    config = PostgresConfig()
    assert all(tier.pooling and tier.pool_size is None for tier in config.tiers().values())
    assert pgb.POOL_SIZES == {"oltp": 80, "content": 40, "queue": 60, "analytics": 40}
    with pytest.raises(ValidationError, match="pool_size"):
        PostgresTierConfig.model_validate({"pool_size": 0})
    with pytest.raises(ValidationError, match="pool_port"):
        PostgresTierConfig.model_validate({"pool_port": 70000})


@pulumi.runtime.test
def test_a_local_tier_gets_a_pooler_entry_and_secret_pooled_urls(mocks):
    from modules.postgres.component import PostgresTier

    tier = PostgresTier("pm-oltp", "oltp", PostgresTierConfig(), OLTP_PASSWORDS)

    def check(args):
        app, app_secret, readonly = args
        entry = mocks.by_name("pm-oltp-pooler")
        inputs = {k: v for k, v in entry.inputs.items() if k not in ("__provider", "host", "port")}
        assert inputs == {
            "tier": "oltp",
            "database": "pm_dev_oltp",
            "role_prefix": "pm_dev_oltp_",
            "pool_size": 80,
            "drift": [],
        }
        assert (
            app == "postgresql://pm_dev_oltp_app:a-password-1234@127.0.0.1:6433/pm_dev_oltp?sslmode=require"
        )
        assert app_secret is True
        assert readonly.startswith("postgresql://pm_dev_oltp_readonly:r-password-1234@127.0.0.1:6433/")

    return pulumi.Output.all(
        tier.app_pooled_url, pulumi.Output.is_secret(tier.app_pooled_url), tier.readonly_pooled_url
    ).apply(check)


@pulumi.runtime.test
def test_with_the_poolers_ca_the_pooled_urls_verify_it(mocks):
    from modules.postgres.component import PostgresTier

    tier = PostgresTier(
        "pm-oltp",
        "oltp",
        PostgresTierConfig(),
        OLTP_PASSWORDS,
        pooler_ca_file="/srv/dev env/pgbouncer/ca.crt",
    )

    def check(url):
        assert url.endswith("/pm_dev_oltp?sslmode=verify-full&sslrootcert=/srv/dev%20env/pgbouncer/ca.crt")

    return tier.app_pooled_url.apply(check)


@pulumi.runtime.test
def test_pool_size_comes_from_config_and_pooling_can_be_turned_off(mocks):
    from modules.postgres.component import PostgresTier

    sized = PostgresTier("pm-content", "content", PostgresTierConfig(pool_size=12), PASSWORDS)
    off = PostgresTier("pm-analytics", "analytics", PostgresTierConfig(pooling=False), PASSWORDS)
    assert off.pooler is None and off.app_pooled_url is None

    def check(_url):
        assert mocks.by_name("pm-content-pooler").inputs["pool_size"] == 12
        assert not [r for r in mocks.resources if r.name == "pm-analytics-pooler"]

    return sized.app_pooled_url.apply(check)


@pulumi.runtime.test
def test_a_server_tier_is_not_pooled_yet(mocks):
    from modules.postgres.component import PostgresTier

    config = PostgresTierConfig.model_validate(
        {"url": "postgresql://admin@db.example.com:5432/nile_oltp?sslmode=verify-full", "name_prefix": "pm"}
    )
    tier = PostgresTier("pm-oltp", "oltp", config, OLTP_PASSWORDS)
    assert tier.pooler is None and tier.app_pooled_url is None
    return tier.app_url.apply(lambda _u: None)


def test_the_provider_checks_every_field():
    provider = pgb.PoolerDatabaseProvider()
    good = {"tier": "oltp", "database": "pm_dev_oltp", "role_prefix": "pm_dev_oltp_", "pool_size": 80}
    assert provider.check({}, good).failures == []
    bad = provider.check(
        {}, {"tier": "mail", "database": "1bad", "role_prefix": "pm_dev_oltp", "pool_size": 2.5}
    ).failures
    assert sorted(f.property for f in bad) == ["database", "pool_size", "role_prefix", "tier"]


def test_no_pooler_outside_a_dev_stack(monkeypatch):
    monkeypatch.setenv(pgb.ENV_HOST, "127.0.0.1")
    with pytest.raises(pgb.PoolerError, match="pooling: false"):
        pgb.pooler_target(ProviderSettings({"penguinmails:environment": "production"}))
    assert pgb.pooler_target(ProviderSettings()).host == "127.0.0.1"


def test_the_databases_file_keeps_other_entries_and_survives_concurrent_writers(tmp_path):
    path = tmp_path / "databases.ini"
    path.write_text("; header\nother = host=127.0.0.1 port=5433 dbname=other pool_size=5\n")
    line = pgb.entry_line("pm_dev_oltp", "127.0.0.1", 5433, "pm_dev_oltp", 80)
    assert (
        line
        == "pm_dev_oltp = host=127.0.0.1 port=5433 dbname=pm_dev_oltp pool_size=80 max_db_connections=82\n"
    )

    def writer(i: int) -> None:
        pgb._write_entry(path, f"db{i}", pgb.entry_line(f"db{i}", "127.0.0.1", 5433, f"db{i}", 1))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pgb._write_entry(path, "pm_dev_oltp", line)
    pgb._write_entry(path, "pm_dev_oltp", line.replace("80", "40"))
    pgb._write_entry(path, "db3", None)
    names = [item.split("=", 1)[0].strip() for item in path.read_text().splitlines()]
    assert names[:2] == ["; header", "other"]
    assert sorted(names[2:]) == sorted([f"db{i}" for i in range(20) if i != 3] + ["pm_dev_oltp"])
    assert "pool_size=40" in path.read_text() and "pool_size=80" not in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_the_lookup_is_pinned_definer_code_for_the_auth_role_only():
    statements = [s.as_string() for s in pgb.lookup_function_sql("pm_dev_oltp_", "pgbouncer_auth")]
    create = next(s for s in statements if s.startswith("CREATE OR REPLACE FUNCTION"))
    assert "SECURITY DEFINER SET search_path = pg_catalog, pg_temp" in create
    assert 'REVOKE ALL ON FUNCTION "pgbouncer"."user_lookup"(text) FROM PUBLIC' in statements
    assert 'GRANT EXECUTE ON FUNCTION "pgbouncer"."user_lookup"(text) TO "pgbouncer_auth"' in statements
    body = pgb.lookup_body("pm_dev_oltp_")
    for fence in (
        "NOT r.rolsuper",
        "NOT r.rolbypassrls",
        "r.oid <> d.datdba",
        "left(s.usename, 12) = 'pm_dev_oltp_'",
    ):
        assert fence in body, fence


def test_an_unreachable_pooler_is_one_line_naming_it_and_the_next_step():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = pgb.PoolerTarget("127.0.0.1", port, "pgbouncer_admin", "s3cret-console-password")
    with pytest.raises(pgb.PoolerError) as caught:
        pgb.reload(target)
    message = caught.value.message
    assert f"PgBouncer 127.0.0.1:{port}" in message and "devenv start pgbouncer" in message
    assert "s3cret-console-password" not in message and message.count("\n") == 0
