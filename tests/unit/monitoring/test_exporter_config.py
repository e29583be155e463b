from __future__ import annotations

import json

import pytest

from modules.monitoring.exporter import ExporterConfigError, load_config

GOOD = {
    "stack": "dev",
    "queue": {
        "worker_url": "postgresql://pm_dev_queue_worker:pw@127.0.0.1:5433/pm_dev_queue",
        "redis_url": "redis://penguinmails-queue:pw@127.0.0.1:6390/0",
        "namespace": "queue:{pm_dev}:",
    },
    "oltp_url": "postgresql://pm_dev_oltp_reputation:pw@127.0.0.1:5433/pm_dev_oltp",
    "sending_ips": ["192.0.2.10", "2001:db8::10"],
    "dnsbl_zones": [{"name": "dnsbl.penguinmails.test", "query_key": None}],
    "resolvers": ["127.0.0.1:5353"],
    "check_interval_seconds": 30,
    "concurrency": 50,
}


def _write(tmp_path, data, mode=0o600):
    path = tmp_path / "exporter-dev.json"
    path.write_text(json.dumps(data))
    path.chmod(mode)
    return path


def test_a_good_file_loads(tmp_path):
    config = load_config(_write(tmp_path, GOOD))
    assert config.sending_ips == ["192.0.2.10", "2001:db8::10"]
    assert config.zones()[0].name == "dnsbl.penguinmails.test"
    assert "pw@" not in repr(config)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_file_others_may_read_is_refused_in_one_line(tmp_path, mode):
    with pytest.raises(ExporterConfigError) as caught:
        load_config(_write(tmp_path, GOOD, mode))
    assert f"is mode {mode:04o}" in caught.value.message and "0600" in caught.value.message
    assert "\n" not in caught.value.message


def test_a_bad_field_is_named_and_secrets_are_not_printed(tmp_path):
    bad = {
        **GOOD,
        "sending_ips": ["192.0.2.300"],
        "queue": {**GOOD["queue"], "redis_url": "http://secret-host"},
        "dnsbl_zones": [{"name": "zen.dq.spamhaus.net", "query_key": "bad key value"}],
    }
    with pytest.raises(ExporterConfigError) as caught:
        load_config(_write(tmp_path, bad))
    text = caught.value.message
    assert "\n" not in text
    assert (
        "sending_ips: Value error, item 0 '192.0.2.300'" in text
        or "sending_ips: item 0 '192.0.2.300'" in text
    )
    assert "queue.redis_url: must be a redis://" in text
    assert "dnsbl_zones.0.query_key: must be one DNS label" in text
    assert "bad key value" not in text


def test_unknown_keys_and_bad_json_are_errors(tmp_path):
    with pytest.raises(ExporterConfigError, match="sending_ip: Extra inputs are not permitted"):
        load_config(_write(tmp_path, {**GOOD, "sending_ip": []}))
    path = tmp_path / "broken.json"
    path.write_text("{")
    path.chmod(0o600)
    with pytest.raises(ExporterConfigError, match="not JSON"):
        load_config(path)
    with pytest.raises(ExporterConfigError, match="No such file"):
        load_config(tmp_path / "absent.json")


def _free_address() -> str:
    from devenv.bind import free_port

    return f"127.0.0.1:{free_port()}"


def test_the_routes_token_is_never_printed_and_a_short_one_is_refused(tmp_path):
    config = load_config(_write(tmp_path, {**GOOD, "routes_token": "r" * 40}))
    assert config.routes_token == "r" * 40 and "r" * 40 not in repr(config)
    with pytest.raises(ExporterConfigError, match="routes_token") as refused:
        load_config(_write(tmp_path, {**GOOD, "routes_token": "short-secret"}))
    assert "short-secret" not in str(refused.value)


def test_a_routes_endpoint_without_a_token_is_refused_before_anything_listens(tmp_path):
    from modules.monitoring.exporter import Exporter

    config = load_config(_write(tmp_path, {**GOOD, "sending_ips": [], "oltp_url": None}))
    with pytest.raises(ExporterConfigError, match="routes_token"):
        Exporter(config, _free_address(), routes_listen=_free_address())


def test_the_exporter_serves_routes_apart_from_metrics_with_the_token(tmp_path):
    import urllib.error
    import urllib.request

    from modules.monitoring.exporter import Exporter

    data = {**GOOD, "queue": None, "sending_ips": [], "oltp_url": None, "routes_token": "r" * 40}
    exporter = Exporter(load_config(_write(tmp_path, data)), _free_address(), routes_listen=_free_address())
    exporter.start()
    try:
        assert exporter.routes.port != exporter.port
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(exporter.routes.url, timeout=5)
        assert refused.value.code == 401
        request = urllib.request.Request(exporter.routes.url, headers={"Authorization": "Bearer " + "r" * 40})
        with pytest.raises(urllib.error.HTTPError) as early:
            urllib.request.urlopen(request, timeout=5)
        assert early.value.code == 503  # no round yet (no IPs to check): the agents keep their routes
    finally:
        exporter.stop()


def test_the_warmup_job_needs_both_its_urls_and_they_are_checked(tmp_path):
    from modules.config.reputation import ReputationConfig
    from modules.monitoring.component import exporter_settings

    with pytest.raises(ExporterConfigError, match="warmup_url"):
        load_config(_write(tmp_path, {**GOOD, "warmup_url": "http://127.0.0.1:9390"}))
    with pytest.raises(ExporterConfigError, match="prometheus_url"):
        load_config(_write(tmp_path, {**GOOD, "prometheus_url": "postgresql://x@127.0.0.1/db"}))

    def settings(**warmup):
        return exporter_settings(
            stack="dev", environment="dev", reputation=ReputationConfig(), resolvers=[], sending_ips=[],
            queue=None, oltp_url=None, query_secrets={}, warmup=warmup,
        )  # fmt: skip

    warmup_url = "postgresql://pm_dev_oltp_warmup:pw@127.0.0.1:5433/pm_dev_oltp"
    assert "warmup_url" not in settings(warmup_url=warmup_url, prometheus_url=None)
    both = settings(warmup_url=warmup_url, prometheus_url="http://127.0.0.1:9390", warmup_start_day=2)
    assert both["warmup_interval_seconds"] == 60.0 and both["warmup_start_day"] == 2
    config = load_config(_write(tmp_path, both))
    assert config.warmup_url == warmup_url and "pw@" not in repr(config)


def test_retention_urls_are_per_retained_tier_checked_and_never_printed(tmp_path):
    from modules.config.reputation import ReputationConfig
    from modules.monitoring.component import exporter_settings

    url = "postgresql://pm_dev_queue_readonly:s3cret@127.0.0.1:5433/pm_dev_queue"
    with pytest.raises(ExporterConfigError, match=r"retention_urls: 'oltp' is not a tier with retention"):
        load_config(_write(tmp_path, {**GOOD, "retention_urls": {"oltp": url}}))
    with pytest.raises(
        ExporterConfigError, match=r"retention_urls: queue: must be a postgresql:// URL"
    ) as bad:
        load_config(_write(tmp_path, {**GOOD, "retention_urls": {"queue": "http://x:s3cret@h"}}))
    assert "s3cret" not in bad.value.message

    def settings(retention_urls):
        return exporter_settings(
            stack="dev", environment="dev", reputation=ReputationConfig(), resolvers=[], sending_ips=[],
            queue=None, oltp_url=None, query_secrets={}, retention_urls=retention_urls,
        )  # fmt: skip

    assert "retention_urls" not in settings({})
    config = load_config(_write(tmp_path, settings({"queue": url})))
    assert config.retention_urls == {"queue": url} and "s3cret" not in repr(config)
