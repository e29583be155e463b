"""devenv's monitoring config without running it: the scrape jobs of the contract, routes, targets, ports."""

from __future__ import annotations

import json

import pytest

from devenv.alert_sink import AlertSinkService
from devenv.bind import BindService
from devenv.exporters import BindExporterService, PostgresExporterService, RedisExporterService
from devenv.prometheus import JOBS, RULES_GLOB, AlertmanagerService, PrometheusService, write_targets
from devenv.registry import SERVICE_CLASSES
from modules.errors import DevenvError


def test_prometheus_has_one_file_sd_job_per_contract_job(tmp_path):
    config = PrometheusService(root=tmp_path).config()
    assert [job["job_name"] for job in config["scrape_configs"]] == list(JOBS)
    assert set(JOBS) == {
        "node",
        "postfix",
        "postgres",
        "redis",
        "bind",
        "penguinmails",
        "prometheus",
        "alertmanager",
    }
    for job in config["scrape_configs"]:
        (sd,) = job["file_sd_configs"]
        assert sd == {
            "files": [str(tmp_path / "prometheus" / "targets" / job["job_name"] / "*.json")],
            "refresh_interval": "5s",
        }
    assert config["global"]["scrape_interval"] == config["global"]["evaluation_interval"] == "5s"
    assert config["rule_files"] == [str(RULES_GLOB)]
    assert str(RULES_GLOB).endswith("ansible/roles/monitoring/files/rules/*.rules.yml")
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9393"]


def test_alertmanager_routes_everything_to_the_sink_grouped_by_the_contract_labels(tmp_path):
    config = AlertmanagerService(root=tmp_path).config()
    route = config["route"]
    assert route["group_by"] == ["alertname", "stack", "component"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("5s", "10s", "1h")
    (receiver,) = config["receivers"]
    assert receiver["name"] == route["receiver"]
    assert receiver["webhook_configs"][0]["url"] == "http://127.0.0.1:9394/alerts"
    assert "--cluster.listen-address=" in AlertmanagerService(root=tmp_path).command()


def test_write_targets_replaces_the_stack_file_and_refuses_unknown_jobs(tmp_path):
    path = write_targets(tmp_path, "redis", ["127.0.0.1:9391"], {"component": "redis"})
    write_targets(tmp_path, "redis", ["127.0.0.1:9391"], {"component": "redis"})
    assert path == tmp_path / "prometheus" / "targets" / "redis" / "devenv.json"
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:9391"], "labels": {"stack": "devenv", "component": "redis"}}
    ]
    assert [p.name for p in path.parent.iterdir()] == ["devenv.json"]  # no temporary file left
    with pytest.raises(DevenvError, match="not a scrape job"):
        write_targets(tmp_path, "mysql", ["127.0.0.1:1"], {})


def test_default_ports_and_env_are_the_contract(tmp_path):
    assert PrometheusService(root=tmp_path).address == "127.0.0.1:9390"
    assert PostgresExporterService(root=tmp_path).address == "127.0.0.1:9387"
    assert BindExporterService(root=tmp_path).address == "127.0.0.1:9389"
    assert RedisExporterService(root=tmp_path).address == "127.0.0.1:9391"
    assert BindService(root=tmp_path).stats_port == 8053
    assert BindService(root=tmp_path, port=15353).stats_port == 15354  # private servers keep port + 1
    assert "--bind.stats-url=http://127.0.0.1:8053/" in BindExporterService(root=tmp_path).command()
    env = {
        **PrometheusService(root=tmp_path).env(),
        **AlertmanagerService(root=tmp_path).env(),
        **AlertSinkService(root=tmp_path).env(),
    }
    assert env == {
        "PENGUINMAILS_PROMETHEUS_URL": "http://127.0.0.1:9390",
        "PENGUINMAILS_PROMETHEUS_TARGETS_DIR": str(tmp_path / "prometheus" / "targets"),
        "PENGUINMAILS_ALERTMANAGER_URL": "http://127.0.0.1:9393",
        "PENGUINMAILS_ALERT_SINK_URL": "http://127.0.0.1:9394",
        "PENGUINMAILS_PROMETHEUS_SCRAPE_SOURCE": "10.88.0.1",
    }


def test_monitoring_starts_after_the_servers_it_watches_and_prometheus_last():
    names = [cls.name for cls in SERVICE_CLASSES]
    for watched, watcher in (
        ("postgres", "postgres-exporter"),
        ("redis", "redis-exporter"),
        ("bind", "bind-exporter"),
        ("alert-sink", "alertmanager"),
    ):
        assert names.index(watched) < names.index(watcher)
    assert names[-1] == "prometheus"


def test_exporter_credentials_never_reach_the_command_line(tmp_path):
    for service in (PostgresExporterService(root=tmp_path), RedisExporterService(root=tmp_path)):
        password = service.secret("monitor.password")
        assert all(password not in arg for arg in service.command())
        assert all(password not in value for value in service.process_env().values())


def test_the_penguinmails_exporter_serves_routes_on_the_bridge_only_with_a_stack_token(tmp_path):
    from devenv.penguinmails_exporter import ROUTES_ADDRESS, ROUTES_URL, PenguinmailsExporterService

    service = PenguinmailsExporterService(root=tmp_path)
    service.config_file.write_text(json.dumps({"stack": "dev"}))  # an older config: no token, no endpoint
    assert "--routes-listen" not in service.command()
    service.config_file.write_text(json.dumps({"stack": "dev", "routes_token": "r" * 40}))
    command = service.command()
    assert command[command.index("--routes-listen") + 1] == ROUTES_ADDRESS == "10.88.0.1:9396"
    assert command[command.index("--listen") + 1] == "127.0.0.1:9395"  # /metrics stays on loopback
    assert (
        service.env()["PENGUINMAILS_SENDER_ROUTES_URL"]
        == ROUTES_URL
        == f"http://{ROUTES_ADDRESS}/v1/sending-ips"
    )


def test_the_dev_exporter_restarts_on_changed_code_as_well_as_changed_config(tmp_path, monkeypatch):
    from devenv.penguinmails_exporter import PenguinmailsExporterService
    from modules.ansible import wheelhouse

    service = PenguinmailsExporterService(root=tmp_path)
    service.dir.mkdir(parents=True, exist_ok=True)
    starts = []
    monkeypatch.setattr(service, "stop", lambda: None)
    monkeypatch.setattr(service, "start", lambda: starts.append(1))
    monkeypatch.setattr(service, "running", lambda: True)
    digests = iter(["code-1", "code-1", "code-2"])
    monkeypatch.setattr(wheelhouse, "digest", lambda: next(digests))
    text = json.dumps({"stack": "dev"})
    assert service.install(text) is True  # first time
    assert service.install(text) is False  # same config, same code: left running
    assert service.install(text) is True  # same config, new exporter code: restarted
    assert len(starts) == 2
