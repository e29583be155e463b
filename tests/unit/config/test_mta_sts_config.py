"""MTA-STS settings: enforce is refused until the stack manages the MX hosts' certificates, and the CA
bundle the verifier trusts follows the dev-vs-real rule (only a dev stack reads the devenv's variable)."""

from __future__ import annotations

import pytest

from modules.config import model
from modules.config.loader import validate_config
from modules.dns.sts_fetch import DEV_CA_FILE_VARIABLE, ca_file_for
from modules.errors import ConfigError

BASE = {
    "fleet": {"nodes": 1},
    "dns": {"zones": [{"name": "acme.test"}]},
    "tenants": [{"slug": "acme", "domains": [{"name": "acme.test"}]}],
}


def _config(**mail):
    return validate_config({**BASE, "mail": mail}, stack="t")


def test_enforce_is_refused_without_managed_certificates_naming_the_field_and_the_reason():
    with pytest.raises(ConfigError) as caught:
        _config(mta_sts_mode="enforce")
    (reason,) = caught.value.reasons
    assert reason.startswith("penguinmails:mail: mta_sts_mode: 'enforce' needs certificates")
    assert "mail.acme" in reason and "refuse to deliver" in reason


@pytest.mark.parametrize("mode", ["testing", "none"])
def test_testing_and_none_need_no_managed_certificates(mode):
    assert _config(mta_sts_mode=mode).mail.mta_sts_mode == mode


def test_enforce_is_accepted_once_certificates_are_managed(monkeypatch):
    # The ACME section lands on another branch; the refusal asks this one function about it.
    monkeypatch.setattr(model, "mx_certificates_managed", lambda mail: True)
    assert _config(mta_sts_mode="enforce").mail.mta_sts_mode == "enforce"


def test_managed_certificates_are_read_from_mail_acme():
    mail = model.MailConfig()
    assert model.mx_certificates_managed(mail) is False
    object.__setattr__(mail, "acme", {"directory": "x"})
    assert model.mx_certificates_managed(mail) is True
    object.__setattr__(mail, "acme", None)
    assert model.mx_certificates_managed(mail) is False


def test_a_dev_stack_trusts_the_devenv_ca_first_then_its_config():
    config = _config(mta_sts_ca_file="/etc/penguinmails/ca.pem")
    assert ca_file_for(config, {DEV_CA_FILE_VARIABLE: "/dev-ca.pem"}) == "/dev-ca.pem"
    assert ca_file_for(config, {}) == "/etc/penguinmails/ca.pem"
    assert ca_file_for(_config(), {}) is None, "none: the system trust store"


def test_a_production_stack_never_reads_the_devenv_ca():
    config = validate_config({**BASE, "environment": "staging"}, stack="t")
    assert ca_file_for(config, {DEV_CA_FILE_VARIABLE: "/dev-ca.pem"}) is None
    config = validate_config(
        {**BASE, "environment": "staging", "mail": {"mta_sts_ca_file": "/ca.pem"}}, stack="t"
    )
    assert ca_file_for(config, {DEV_CA_FILE_VARIABLE: "/dev-ca.pem"}) == "/ca.pem"
