"""MailHosts with mail.acme: names per host, role settings, the narrow key as a secret var only."""

from __future__ import annotations

import pulumi
import pytest

from modules.ansible import mailhosts
from modules.config.model import StackConfig
from modules.errors import ValidationError
from tests.unit.ansible.conftest import RecordingMocks

INVENTORY = [
    {"name": "mx-01", "fqdn": "mx-01.fleet.example.net", "ip": "203.0.113.10", "service_id": 1},
    {"name": "mx-02", "fqdn": "mx-02.fleet.example.net", "ip": "203.0.113.11", "service_id": 2},
]
DEVENV = {
    "PENGUINMAILS_ACME_DIRECTORY": "https://10.88.0.1:14000/dir",
    "PENGUINMAILS_ACME_TSIG_SECRET": "ZGV2LWFjbWUta2V5",
    "PENGUINMAILS_ACME_DNS_SERVER": "10.88.0.1",
}


def _config(zones=("example.net",)) -> StackConfig:
    return StackConfig.model_validate(
        {
            "fleet": {"nodes": 2, "rdns_domain": "fleet.example.net"},
            "dns": {"zones": [{"name": z} for z in zones]},
            "tenants": [{"slug": "acme", "domains": [{"name": "acme.example.net", "sending_node": 2}]}],
            "mail": {"acme": {"contact_email": "hostmaster@example.net"}},
        }
    )


@pytest.fixture
def mocks(monkeypatch):
    for key, value in DEVENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PENGUINMAILS_ACME_SERVER_CA_FILE", raising=False)
    found = RecordingMocks()
    pulumi.runtime.set_mocks(found, preview=False)
    return found


def test_host_vars_carry_each_hosts_certificate_names():
    host_vars = mailhosts.plan_host_vars(_config(), INVENTORY)
    assert host_vars["mx-01"]["acme_names"] == ["mx-01.fleet.example.net"]
    assert host_vars["mx-02"]["acme_names"] == [
        "mx-02.fleet.example.net",
        "mail.acme.example.net",
        "mta-sts.acme.example.net",
    ]


@pulumi.runtime.test
def test_playbook_gets_acme_settings_and_the_key_as_a_secret(mocks):
    hosts = mailhosts.MailHosts("pm-mail", _config(), INVENTORY)

    def check(_):
        inputs = next(a for a in mocks.created if a.typ == "pulumi-python:dynamic/ansible:Playbook").inputs
        assert inputs["vars"]["acme_enabled"] is True
        assert inputs["vars"]["acme_directory_url"] == DEVENV["PENGUINMAILS_ACME_DIRECTORY"]
        assert "ZGV2LWFjbWUta2V5" not in str(inputs["vars"]) + str(inputs["host_vars"])
        secret_vars = inputs["secret_vars"]
        assert set(secret_vars) == {"4dabf18193072939515e22adb298388d", "value"}, "secret_vars must be secret"
        assert secret_vars["value"]["acme_tsig_secret"] == "ZGV2LWFjbWUta2V5"

    return hosts.playbook.urn.apply(check)


def test_names_outside_every_zone_fail_before_any_resource(mocks):
    with pytest.raises(ValidationError) as caught:
        mailhosts.MailHosts("pm-mail", _config(zones=("acme.example.net",)), INVENTORY)
    assert any(r.startswith("mx-01: mx-01.fleet.example.net lies in no zone") for r in caught.value.reasons)
    assert mocks.created == []
