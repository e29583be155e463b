"""A tier on a fleet VPS without a server: its config, the role's variables, the explicit server input and
the replication lag gauge's edge cases."""

from __future__ import annotations

import json
import os
import stat

import pytest
from prometheus_client.core import GaugeMetricFamily
from pydantic import ValidationError as PydanticError

from modules.ansible import postgres_host
from modules.config.model import StackConfig
from modules.errors import ToolkitError, ValidationError
from modules.monitoring import replication
from modules.monitoring.replication import ReplicaSource
from modules.postgres.client import ca_file, explicit_target, server_target
from modules.providers import ProviderSettings
from modules.secrets.tls import CaSpec, make_ca

CA_PEM, _ = make_ca(CaSpec("unit test CA"))
_LABEL = " ".join(("PRIVATE", "KEY"))  # a placeholder, not a key: no private-key block in the repository
KEY = f"-----BEGIN {_LABEL}-----\nAAAA\n-----END {_LABEL}-----\n"


def _fleet(**vps) -> dict:
    return {"mode": "fleet", "vps": {"ssh_key_names": ["op"], **vps}}


def test_a_fleet_tier_needs_its_vps_and_no_url():
    with pytest.raises(PydanticError, match="mode is fleet: describe the host in vps"):
        StackConfig.model_validate({"postgres": {"oltp": {"mode": "fleet"}}})
    with pytest.raises(PydanticError, match="vps is only used with mode: fleet"):
        StackConfig.model_validate({"postgres": {"oltp": {"vps": {}}}})
    config = StackConfig.model_validate({"postgres": {"oltp": _fleet(replicas=1)}})
    assert config.postgres.oltp.vps.replicas == 1 and config.postgres.oltp.vps.port == 5432


@pytest.mark.parametrize(
    ("vps", "reason"),
    [
        ({"replicas": 2}, "replicas"),
        ({"allowed_networks": ["not-a-net"]}, "is not a network"),
        ({"allowed_networks": ["10.0.0.1"]}, "needs a prefix length"),
        ({"additional_ips": {1: ["192.0.2.5"]}}, "only the sending fleet"),
        ({"max_connections": 5}, "max_connections"),
    ],
)
def test_bad_vps_fields_are_named(vps, reason):
    with pytest.raises(PydanticError, match=reason):
        StackConfig.model_validate({"postgres": {"oltp": _fleet(**vps)}})


def test_a_real_stack_must_list_the_networks_that_may_log_in():
    tiers = {
        t: {"mode": "server", "host": "db.example.test", "sslmode": "verify-full"}
        for t in ("content", "analytics", "queue")
    }
    with pytest.raises(
        PydanticError, match=r"postgres\.oltp\.vps\.allowed_networks: list the platform's networks"
    ):
        StackConfig.model_validate({"environment": "staging", "postgres": {**tiers, "oltp": _fleet()}})
    ok = StackConfig.model_validate(
        {"environment": "staging", "postgres": {**tiers, "oltp": _fleet(allowed_networks=["10.1.0.0/16"])}}
    )
    assert ok.postgres.oltp.vps.allowed_networks == ["10.1.0.0/16"]


def test_playbook_vars_name_every_bad_field():
    with pytest.raises(ValidationError) as raised:
        postgres_host.playbook_vars(
            tls_certificate="nope",
            tls_ca_certificate=CA_PEM,
            allowed_networks=["10.0.0.0"],
            port=0,
            memory_mb=-1,
        )
    text = str(raised.value)
    for field in ("tls_certificate", "allowed_networks", "port", "memory_mb"):
        assert field in text
    assert "tls_ca_certificate" not in text


def test_secret_vars_never_quote_a_secret():
    with pytest.raises(ValidationError) as raised:
        postgres_host.secret_vars(
            admin_password="short-secret", tls_private_key="x", replication_password="a:b" * 9
        )
    text = str(raised.value)
    assert "short-secret" not in text and "a:b" not in text
    assert "admin_password" in text and "tls_private_key" in text and "replication_password" in text


def test_host_vars_pair_the_primary_with_its_replica_and_slot():
    primary, replica = {"name": "pg-oltp-01", "ip": "10.88.0.5"}, {"name": "pg-oltp-r01", "ip": "10.88.0.6"}
    values = postgres_host.host_vars(primary, replica)
    assert values["pg-oltp-01"]["postgresql_role"] == "primary"
    assert values["pg-oltp-01"]["postgresql_replica_addresses"] == ["10.88.0.6"]
    assert values["pg-oltp-01"]["postgresql_replication_slots"] == ["pg_oltp_r01"]
    assert values["pg-oltp-r01"] == {
        "postgresql_role": "replica",
        "postgresql_listen_addresses": ["10.88.0.6", "127.0.0.1"],
        "postgresql_primary_host": "10.88.0.5",
        "postgresql_replication_slot": "pg_oltp_r01",
    }
    alone = postgres_host.host_vars(primary, None)
    assert list(alone) == ["pg-oltp-01"] and alone["pg-oltp-01"]["postgresql_replica_addresses"] == []


def test_an_explicit_server_wins_over_the_config_and_its_ca_lands_in_a_file():
    server = {
        "host": "10.88.0.5",
        "port": 5432,
        "user": "postgres",
        "password": "p" * 20,
        "sslmode": "verify-full",
        "sslrootcert": CA_PEM,
    }
    settings = ProviderSettings({"penguinmails:postgres": json.dumps({"oltp": _fleet()})})
    target = server_target(settings, "oltp", server)
    assert (target.host, target.port, target.sslmode) == ("10.88.0.5", 5432, "verify-full")
    assert "p" * 20 not in repr(target)
    with open(target.sslrootcert) as handle:
        assert handle.read() == CA_PEM
    assert stat.S_IMODE(os.stat(os.path.dirname(target.sslrootcert)).st_mode) == 0o700
    assert target.with_login("app", "x" * 20).sslrootcert == target.sslrootcert
    assert ca_file(CA_PEM) == target.sslrootcert  # named by its content: the same file again


def test_a_fleet_tier_without_a_server_input_says_where_its_server_is():
    settings = ProviderSettings({"penguinmails:postgres": json.dumps({"oltp": _fleet()})})
    with pytest.raises(ToolkitError, match="fleet tier's server is known only to the stack's resources"):
        server_target(settings, "oltp")
    with pytest.raises(ToolkitError, match="password missing"):
        explicit_target({"host": "h", "port": 5432, "user": "postgres"})


def test_a_replica_that_does_not_answer_is_down_without_a_lag_sample():
    up = GaugeMetricFamily("penguinmails_source_up", "", labels=["source"])
    source = ReplicaSource(tier="oltp", url="postgresql://ro:pw@127.0.0.1:1/db?sslmode=disable")
    families = list(replication.collect([source], 1.0, up))
    assert [f.name for f in families] == ["penguinmails_postgres_replication_lag_seconds"]
    assert families[0].samples == []
    assert [(s.labels, s.value) for s in up.samples] == [({"source": "replica_oltp"}, 0.0)]
    assert list(replication.collect([], 1.0, up)) == []
