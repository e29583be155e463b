"""The Platform component under Pulumi mocks: what it declares and which outputs stay secret."""

from __future__ import annotations

import pulumi
import pytest


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(args)
        state = dict(args.inputs)
        if args.typ.endswith("secrets:GeneratedSecret"):
            state["result"] = f"generated-{args.name}"
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def _installed(recording: RecordingMocks) -> RecordingMocks:
    pulumi.runtime.set_mocks(recording, project="penguinmails", stack="unit", preview=False)
    return recording


@pytest.fixture
def mocks():
    return _installed(RecordingMocks())


@pulumi.runtime.test
def test_platform_declares_tier_passwords_and_a_limited_redis_user(mocks):
    from modules.config.loader import validate_config
    from modules.platform.component import TIER_ROLES, Platform

    config = validate_config({"redis": {"queue_user": "pm-queue", "key_prefixes": ["queue:"]}})
    platform = Platform("pm", config)

    def check(args):
        url, is_secret = args
        types = [r.typ for r in mocks.resources]
        # Three roles per tier, the queue tier's worker, the oltp tier's reputation and warmup roles, and the
        # Redis user.
        assert types.count("pulumi-python:dynamic/secrets:GeneratedSecret") == 4 * len(TIER_ROLES) + 1 + 2 + 1
        assert {tier: sorted(roles) for tier, roles in platform.tier_passwords.items()}["queue"] == [
            "app",
            "migrator",
            "readonly",
            "worker",
        ]
        assert "worker" not in platform.tier_passwords["oltp"]
        assert sorted(platform.tier_passwords["oltp"]) == [
            "app",
            "migrator",
            "readonly",
            "reputation",
            "warmup",
        ]
        user = next(r for r in mocks.resources if r.typ == "pulumi-python:dynamic/redis:User")
        assert user.inputs["username"] == "pm-queue"
        assert user.inputs["key_prefixes"] == ["queue:"]
        assert user.custom is True
        assert url == "redis://pm-queue:generated-pm-redis-queue-password@127.0.0.1:6390/0"
        assert is_secret is True

    # Resources register asynchronously: wait for every tier password as well, not only the Redis URL,
    # before counting what was declared.
    passwords = [secret for roles in platform.tier_passwords.values() for secret in roles.values()]
    return pulumi.Output.all(
        platform.redis_url, pulumi.Output.is_secret(platform.redis_url), platform.redis_user.id, *passwords
    ).apply(lambda args: check(args[:2]))


class VpsMocks(RecordingMocks):
    """Also answers what the fleet and the certificate resources compute (inventory, PEMs)."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        id_, state = super().new_resource(args)
        if args.typ.endswith("hostwinds:FleetReady"):
            state["inventory"] = [
                {"name": "redis-01", "fqdn": "redis-01.pm.test", "ip": "10.88.7.7", "service_id": 7}
            ]
        if args.typ.endswith("secrets:PrivateCa") or args.typ.endswith("secrets:ServerCertificate"):
            from modules.secrets import tls

            if args.typ.endswith("PrivateCa"):
                state["cert_pem"], state["key_pem"] = tls.make_ca(tls.CaSpec("unit CA"))
            else:
                spec = tls.ServerCertSpec(tuple(args.inputs["dns_names"]), tuple(args.inputs["ip_addresses"]))
                state["cert_pem"], state["key_pem"] = tls.issue(
                    spec, args.inputs["ca_cert_pem"], args.inputs["ca_key_pem"]
                )
        return id_, state


@pytest.fixture
def vps_mocks():
    return _installed(VpsMocks())


@pulumi.runtime.test
def test_redis_on_a_vps_is_converged_by_the_role_with_a_stack_ca_and_no_separate_acl_user(vps_mocks):
    from modules.config.loader import validate_config
    from modules.platform.component import Platform

    config = validate_config(
        {
            "redis": {
                "deploy": "vps",
                "tls": True,
                "queue_user": "pm-queue",
                "vps": {"ssh_key_names": ["ops"], "rdns_domain": "pm.test", "tls_port": 6381},
            }
        }
    )
    platform = Platform("pm", config)

    def check(args):
        url, is_secret, ca_pem = args
        types = [r.typ for r in vps_mocks.resources]
        assert "pulumi-python:dynamic/redis:User" not in types  # the host's ACL file holds the user
        playbook = next(r for r in vps_mocks.resources if r.name == "pm-redis-playbook")
        assert playbook.inputs["playbook"] == "redis.yml"
        assert [h["ip"] for h in playbook.inputs["hosts"]] == ["10.88.7.7"]
        secret_vars = playbook.inputs["secret_vars"]
        secret_vars = secret_vars.get("value", secret_vars)  # a secret input arrives wrapped
        users = secret_vars["redis_acl_users"]
        assert [u["name"] for u in users] == ["pm-queue"] and "+flushall" not in users[0]["rules"]
        cert = next(r for r in vps_mocks.resources if r.name == "pm-redis-cert")
        assert cert.inputs["dns_names"] == ["redis-01.pm.test"] and cert.inputs["ip_addresses"] == [
            "10.88.7.7"
        ]
        assert playbook.inputs["vars"]["redis_tls_ca_certificate"] == ca_pem
        assert url == "rediss://pm-queue:generated-pm-redis-queue-password@10.88.7.7:6381/0"
        assert is_secret is True

    # Wait for the playbook itself too (resources register asynchronously).
    return pulumi.Output.all(
        platform.redis_url,
        pulumi.Output.is_secret(platform.redis_url),
        platform.redis_ca_certificate,
        platform.redis_host.playbook.id,
    ).apply(lambda args: check(args[:3]))


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_only_a_dev_stack_takes_the_devenv_routes_endpoint(monkeypatch, environment):
    from types import SimpleNamespace

    from modules.config.loader import validate_config
    from modules.platform.component import Platform

    monkeypatch.setenv("PENGUINMAILS_SENDER_ROUTES_URL", "http://10.88.0.1:9396/v1/sending-ips")
    no_vps = SimpleNamespace(monitoring_node=None)  # a platform without a monitoring VPS
    assert Platform._routes_url(no_vps, validate_config({})) == "http://10.88.0.1:9396/v1/sending-ips"
    real = SimpleNamespace(environment=environment)  # all _routes_url reads of the stack's config
    assert Platform._routes_url(no_vps, real) is None  # a local setting never reaches a real stack's hosts


class MonitoringVpsMocks(RecordingMocks):
    """The mail fleet's and the monitoring VPS's inventories, told apart by the resource's name."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        id_, state = super().new_resource(args)
        if args.typ.endswith("hostwinds:FleetReady"):
            if "monitoring" in args.name:
                state["inventory"] = [
                    {"name": "mon-01", "fqdn": "mon-01.pm.test", "ip": "10.88.9.9", "service_id": 9}
                ]
            else:
                state["inventory"] = [
                    {"name": "mx-01", "fqdn": "mx-01.pm.test", "ip": "10.88.7.7", "service_id": 7}
                ]
        return id_, state


def _unwrapped(value):
    return value.get("value", value) if isinstance(value, dict) and "value" in value else value


@pulumi.runtime.test
def test_a_monitoring_vps_is_ordered_converged_and_what_the_mail_hosts_report_to(monkeypatch):
    from modules.config.loader import validate_config
    from modules.platform.component import Platform

    monkeypatch.setenv(
        "PENGUINMAILS_SENDER_ROUTES_URL", "http://10.88.0.1:9396/v1/sending-ips"
    )  # must not win
    monkeypatch.setenv("PENGUINMAILS_PROMETHEUS_SCRAPE_SOURCE", "10.88.0.1")
    mocks = MonitoringVpsMocks()
    # The dev stack's name: throwaway dev stacks do not converge their fleet (modules/ansible/mailhosts.py).
    pulumi.runtime.set_mocks(mocks, project="penguinmails", stack="dev", preview=False)
    config = validate_config(
        {
            "fleet": {"nodes": 1, "ssh_key_names": ["ops"], "rdns_domain": "pm.test"},
            "dns": {"zones": [{"name": "acme.test"}]},
            "tenants": [{"slug": "acme", "domains": [{"name": "acme.test"}]}],
            "postgres": {tier: {"enabled": False} for tier in ("oltp", "content", "analytics", "queue")},
            "monitoring": {
                "deploy": "vps",
                "vps": {
                    "ssh_key_names": ["ops"],
                    "webhook_url": "https://hooks.example.net/pm",
                    "email_to": ["oncall@example.net"],
                    "email_from": "alerts@acme.test",
                },
            },
        }
    )
    platform = Platform("pm", config)

    def check(_):
        by_name = {r.name: r for r in mocks.resources}
        mail = by_name["pm-mail-host-mx-01"].inputs  # one playbook per node
        assert mail["vars"]["monitoring_agent_allowed_sources"] == ["10.88.9.9"]
        assert mail["vars"]["postfix_sender_routes_url"] == "http://10.88.9.9:9396/v1/sending-ips"
        alert_password = "generated-pm-mail-alert-login"
        users = _unwrapped(mail["secret_vars"])["dovecot_users"]
        assert {"address": "alerts@acme.test", "password": alert_password} in users
        logins = mail["host_vars"]["mx-01"]["postfix_sender_logins"]
        assert {"login": "alerts@acme.test", "domains": ["acme.test"]} in logins

        mon = by_name["pm-monitoring-host-playbook"].inputs
        assert mon["playbook"] == "monitoring.yml" and [h["ip"] for h in mon["hosts"]] == ["10.88.9.9"]
        plain = mon["vars"]
        assert plain["monitoring_targets"]["node"][0]["targets"] == ["10.88.7.7:9100"]
        assert plain["monitoring_targets"]["penguinmails"][0]["targets"] == ["127.0.0.1:9395"]
        assert plain["monitoring_smarthost"] == "10.88.7.7:587"
        assert plain["monitoring_smarthost_server_name"] == "mx-01.pm.test"
        assert plain["monitoring_email_from"] == plain["monitoring_smarthost_username"] == "alerts@acme.test"
        assert plain["penguinmails_exporter_routes_listen"] == "10.88.9.9:9396"
        assert plain["penguinmails_exporter_wheelhouse"].startswith(".cache/wheelhouse/")
        assert "monitoring_smarthost_password" not in plain
        secret = _unwrapped(mon["secret_vars"])
        assert secret["monitoring_smarthost_password"] == alert_password
        exporter = secret["penguinmails_exporter_config"]
        assert "warmup_url" not in exporter  # no OLTP tier here: no warm-up job
        assert exporter["routes_token"] == "generated-pm-sender-routes-token"
        assert exporter.get("dns_ca_file") is None  # a controller's path means nothing on the host

    return platform.monitoring_host.playbook.id.apply(check)


def test_the_warm_up_job_on_a_monitoring_vps_reads_the_prometheus_beside_it(monkeypatch):
    from types import SimpleNamespace

    from modules.config.loader import validate_config
    from modules.platform.component import Platform

    monkeypatch.setenv("PENGUINMAILS_PROMETHEUS_URL", "http://127.0.0.1:9390")
    config = validate_config({})
    assert Platform._prometheus_url(SimpleNamespace(monitoring_node=None), config) == "http://127.0.0.1:9390"
    assert (
        Platform._prometheus_url(SimpleNamespace(monitoring_node=object()), config) == "http://127.0.0.1:9090"
    )
