"""Scrape targets planned from the stack, and the dev stack's target files (ownership, drift, removal)."""

from __future__ import annotations

import json

import pytest

from modules.monitoring.targets import (
    JOBS,
    ScrapeTargetsProvider,
    TargetInputs,
    TargetsError,
    dev_exporters,
    plan_targets,
)
from modules.providers import ProviderSettings

NODES = [{"name": "mx-02", "ip": "10.88.0.12"}, {"name": "mx-01", "ip": "10.88.0.11"}]
TIERS = {"oltp": "pm_dev_oltp", "queue": "pm_dev_queue"}


def _full(**overrides) -> TargetInputs:
    values = dict(
        stack="dev",
        nodes=NODES,
        tiers=TIERS,
        redis=True,
        dns=True,
        queue=True,
        reputation=True,
        exporters=dev_exporters({}),
    )
    values.update(overrides)
    return TargetInputs(**values)


def test_every_node_gets_node_and_postfix_targets_labelled_with_its_component() -> None:
    jobs = plan_targets(_full())
    assert [g["targets"] for g in jobs["node"]] == [["10.88.0.11:9100"], ["10.88.0.12:9100"]]
    assert [g["targets"] for g in jobs["postfix"]] == [["10.88.0.11:9154"], ["10.88.0.12:9154"]]
    assert jobs["node"][0]["labels"] == {
        "stack": "dev",
        "component": "fleet/mx-01",
        "node": "mx-01",
        "ip": "10.88.0.11",
    }


def test_a_new_node_is_a_new_target() -> None:
    before = plan_targets(_full())
    after = plan_targets(_full(nodes=[*NODES, {"name": "mx-03", "ip": "10.88.0.13"}]))
    assert len(after["node"]) == len(before["node"]) + 1
    assert after["node"][-1]["labels"]["component"] == "fleet/mx-03"


def test_tiers_redis_dns_queue_and_reputation_each_have_a_component() -> None:
    jobs = plan_targets(_full())
    assert {g["labels"]["component"] for g in jobs["postgres"]} == {"postgres/oltp", "postgres/queue"}
    assert {g["labels"]["datname"] for g in jobs["postgres"]} == set(TIERS.values())
    assert [g["labels"]["component"] for g in jobs["redis"]] == ["redis"]
    assert [g["labels"]["component"] for g in jobs["bind"]] == ["dns"]
    assert {g["labels"]["component"] for g in jobs["penguinmails"]} == {"queue", "reputation", "dns"}
    assert set(jobs) <= set(JOBS)


def test_a_real_stack_without_known_exporters_plans_only_what_it_can_reach() -> None:
    jobs = plan_targets(_full(exporters={"postgres": {"oltp": "10.0.0.5:9187"}}))
    assert [g["labels"]["component"] for g in jobs["postgres"]] == ["postgres/oltp"]
    assert "redis" not in jobs and "bind" not in jobs and "penguinmails" not in jobs
    assert len(jobs["node"]) == 2  # mail hosts run their own agent


def test_ipv6_targets_are_bracketed() -> None:
    jobs = plan_targets(_full(nodes=[{"name": "mx-01", "ip": "2001:db8::1"}]))
    assert jobs["node"][0]["targets"] == ["[2001:db8::1]:9100"]


def _provider(tmp_path, monkeypatch) -> ScrapeTargetsProvider:
    monkeypatch.setenv("PENGUINMAILS_PROMETHEUS_TARGETS_DIR", str(tmp_path))
    provider = ScrapeTargetsProvider()
    provider.settings = ProviderSettings({"penguinmails:environment": "dev"})
    return provider


def test_create_writes_one_file_per_job_and_delete_removes_only_ours(tmp_path, monkeypatch) -> None:
    provider = _provider(tmp_path, monkeypatch)
    jobs = plan_targets(_full())
    created = provider.create({"stack": "dev", "jobs": jobs, "directory": None})
    for job, groups in jobs.items():
        assert json.loads((tmp_path / job / "dev.json").read_text()) == groups
    other = tmp_path / "node" / "other.json"
    other.write_text(json.dumps([{"targets": ["x:1"], "labels": {"stack": "other"}}]))
    provider.delete(created.id, created.outs)
    assert not (tmp_path / "node" / "dev.json").exists()
    assert other.exists()


def test_a_file_that_is_not_ours_is_refused_not_overwritten(tmp_path, monkeypatch) -> None:
    provider = _provider(tmp_path, monkeypatch)
    foreign = tmp_path / "node" / "dev.json"
    foreign.parent.mkdir(parents=True)
    foreign.write_text(json.dumps([{"targets": ["10.0.0.9:9100"], "labels": {"team": "db"}}]))
    with pytest.raises(TargetsError, match="is not this stack's"):
        provider.create({"stack": "dev", "jobs": plan_targets(_full()), "directory": None})
    assert "10.0.0.9" in foreign.read_text()


def test_read_shows_an_edited_file_as_drift_and_update_restores_it(tmp_path, monkeypatch) -> None:
    provider = _provider(tmp_path, monkeypatch)
    jobs = plan_targets(_full())
    outs = provider.create({"stack": "dev", "jobs": jobs, "directory": None}).outs
    (tmp_path / "postfix" / "dev.json").unlink()
    read = provider.read("targets-dev", outs)
    assert "postfix" not in read.outs["jobs"]
    assert provider.diff("targets-dev", read.outs, {**outs}).changes
    provider.update("targets-dev", read.outs, outs)
    assert json.loads((tmp_path / "postfix" / "dev.json").read_text()) == jobs["postfix"]


def test_a_job_no_longer_planned_loses_its_file(tmp_path, monkeypatch) -> None:
    provider = _provider(tmp_path, monkeypatch)
    outs = provider.create({"stack": "dev", "jobs": plan_targets(_full()), "directory": None}).outs
    provider.update("targets-dev", outs, {**outs, "jobs": plan_targets(_full(nodes=[]))})
    assert not (tmp_path / "node" / "dev.json").exists()
    assert (tmp_path / "postgres" / "dev.json").exists()


def test_check_refuses_unknown_jobs_and_groups_of_another_stack() -> None:
    result = ScrapeTargetsProvider().check(
        {},
        {"stack": "dev", "jobs": {"nagios": [], "node": [{"targets": ["a:1"], "labels": {"stack": "prod"}}]}},
    )
    reasons = " ".join(f.reason for f in result.failures)
    assert "nagios" in reasons and "stack=dev" in reasons


def test_a_real_stack_never_writes_into_the_devenv(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PENGUINMAILS_PROMETHEUS_TARGETS_DIR", str(tmp_path))
    provider = ScrapeTargetsProvider()
    provider.settings = ProviderSettings({"penguinmails:environment": "production"})
    with pytest.raises(TargetsError, match="not set"):
        provider.create({"stack": "prod", "jobs": {}, "directory": None})
    assert list(tmp_path.iterdir()) == []
