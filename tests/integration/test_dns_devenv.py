"""The shared dev BIND started by devenv: the dev stack's zones are served and the exported TSIG key works."""

from __future__ import annotations

import pytest

from devenv.bind import BindService, dev_stack_zones
from modules.dns.errors import DnsAuthError
from modules.dns.rfc2136 import Change, Rfc2136Client, TsigKey

SELFTEST_ZONE = "devenv-selftest.test"


@pytest.fixture(scope="module")
def shared_bind(devenv_env) -> BindService:
    service = BindService()
    service.add_zone(SELFTEST_ZONE)  # idempotent: kept in .devenv/bind/zones.extra
    return service


def test_devenv_exports_how_to_reach_the_server_and_sign_for_it(devenv_env):
    assert devenv_env["PENGUINMAILS_DNS_SERVER"] == "127.0.0.1"
    assert devenv_env["PENGUINMAILS_DNS_PORT"] == "5353"
    assert devenv_env["PENGUINMAILS_TSIG_KEY_NAME"] == "penguinmails-dev"
    assert len(devenv_env["PENGUINMAILS_TSIG_SECRET"]) >= 40


def test_every_zone_of_the_dev_stack_is_served(shared_bind):
    zones = dev_stack_zones(5353)
    assert "penguinmails.test" in shared_bind.zones()
    for zone in zones:
        assert shared_bind.soa_serial(zone) is not None, f"{zone} is not served"


def test_the_exported_key_can_update_and_transfer_and_a_wrong_one_cannot(shared_bind, devenv_env):
    key = TsigKey(devenv_env["PENGUINMAILS_TSIG_KEY_NAME"], devenv_env["PENGUINMAILS_TSIG_SECRET"])
    client = Rfc2136Client("127.0.0.1", 5353, key, timeout=5)
    record = Change("add", f"probe.{SELFTEST_ZONE}", "TXT", "devenv self-test", 60)
    client.update(SELFTEST_ZONE, [record])
    try:
        assert client.transfer(SELFTEST_ZONE).rrsets[(f"probe.{SELFTEST_ZONE}", "TXT")].values == (
            "devenv self-test",
        )
    finally:
        client.update(SELFTEST_ZONE, [Change("delete", record.name, "TXT", record.value)])
    wrong = Rfc2136Client(
        "127.0.0.1", 5353, TsigKey(key.name, "d3Jvbmcgc2VjcmV0IGZvciB0aGUgdGVzdA=="), timeout=5
    )
    with pytest.raises(DnsAuthError, match="the secret is wrong"):
        wrong.transfer(SELFTEST_ZONE)
