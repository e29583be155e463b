"""Row retention without a server: the config fields, the job's command, the schedule's props and checks."""

from __future__ import annotations

import pytest

from modules.config.loader import validate_config
from modules.config.model import DEFAULT_DATA_RETENTION_DAYS, TIERS
from modules.errors import ConfigError
from modules.postgres import retention
from modules.postgres.retention import RetentionScheduleArgs, RetentionScheduleProvider, command_for
from tests.support.postgres import REPO_ROOT


def test_each_tier_keeps_its_documented_days_by_default():
    config = validate_config({})
    found = {tier: section.retention_days(tier) for tier, section in config.postgres.tiers().items()}
    assert found == {"oltp": 90, "content": 2555, "queue": 365, "analytics": 365}
    assert {section.retention_schedule for section in config.postgres.tiers().values()} == {"pg_cron"}


def test_a_configured_retention_wins_for_that_tier_only():
    config = validate_config({"postgres": {"queue": {"data_retention_days": 14}}})
    assert config.postgres.queue.retention_days("queue") == 14
    assert config.postgres.content.retention_days("content") == DEFAULT_DATA_RETENTION_DAYS["content"]


@pytest.mark.parametrize("value", [0, -3, "thirty", 1.5, 36501])
def test_a_bad_retention_names_the_field(value):
    with pytest.raises(ConfigError, match=r"postgres\.content\.data_retention_days"):
        validate_config({"postgres": {"content": {"data_retention_days": value}}})


def test_a_bad_retention_schedule_names_the_field():
    with pytest.raises(ConfigError, match=r"postgres\.queue\.retention_schedule"):
        validate_config({"postgres": {"queue": {"retention_schedule": "cron"}}})


def test_the_job_command_takes_checked_integers_only():
    assert command_for(30) == "CALL retention.run(30, 5000)"
    assert command_for(365, 100) == "CALL retention.run(365, 100)"
    for days in (0, -1, True, "30; DROP TABLE x", 30.0):
        with pytest.raises(ValueError, match="days"):
            command_for(days)
    with pytest.raises(ValueError, match="batch"):
        command_for(30, 0)


def test_the_schedule_is_daily_and_its_own_job():
    args = RetentionScheduleArgs(
        tier="content", database="pm_x_content", username="pm_x_content_migrator", days=180
    )
    props = {**args.props(), "jobid": None, "cron_database": None}
    assert props["jobname"] == "penguinmails_retention" != "penguinmails_maintain_partitions"
    assert props["command"] == "CALL retention.run(180, 5000)"
    hour_fields = props["schedule"].split()
    assert hour_fields[1].isdigit() and hour_fields[2:] == ["*", "*", "*"]  # once a day
    assert RetentionScheduleProvider().check({}, props).failures == []
    bad = RetentionScheduleProvider().check({}, {**props, "schedule": "daily", "tier": "nope"}).failures
    assert {failure.property for failure in bad} == {"schedule", "tier"}


def test_a_changed_retention_is_an_update_in_place():
    provider = RetentionScheduleProvider()
    old = RetentionScheduleArgs(tier="queue", database="d", username="u", days=30).props()
    new = RetentionScheduleArgs(tier="queue", database="d", username="u", days=14).props()
    diff = provider.diff("1", old, new)
    assert diff.changes and not diff.replaces


def test_every_retained_tier_links_the_shared_migration_and_registers_policies():
    for tier in TIERS:
        folder = REPO_ROOT / "schemas" / tier
        linked = [p for p in folder.glob("*_retention.sql") if p.resolve().name == "retention.sql"]
        policies = [p for p in folder.glob("*_retention_policies.sql")]
        if tier in retention.RETAINED_TIERS:
            assert len(linked) == 1 and len(policies) == 1, tier
            assert int(policies[0].name[:4]) > int(linked[0].name[:4])
        else:
            assert not linked and not policies, tier
