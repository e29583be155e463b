"""DMARC tags: the generated record and the checks on hand-written ones."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modules.config.loader import validate_config
from modules.dns.dmarc import (
    KNOWN_TAGS,
    POLICIES,
    build_dmarc,
    check_dmarc,
    needs_authorization,
    parse_dmarc,
    report_addresses,
    report_domains,
)
from modules.errors import ConfigError


def test_generated_record_is_valid_and_leaves_defaults_out():
    text = build_dmarc("quarantine", ["mailto:d@reports.test"], [], adkim="s", testing=True)
    assert text == "v=DMARC1; p=quarantine; adkim=s; t=y; rua=mailto:d@reports.test"
    tags, errors = parse_dmarc(text)
    assert errors == [] and tags["p"] == "quarantine"
    assert report_domains(tags) == ["reports.test"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("p=none; v=DMARC1", "the first tag must be v=DMARC1"),
        ("v=DMARC1", "p= is missing"),
        ("v=DMARC1; p=block", "p=block is not one of none, quarantine, reject"),
        ("v=DMARC1; p=none; sp=maybe", "sp=maybe"),
        ("v=DMARC1; p=none; pct=150", "pct=150"),
        ("v=DMARC1; p=none; adkim=x", "adkim=x must be r"),
        ("v=DMARC1; p=none; rua=dmarc@example.test", "is not a mailto: or https: report address"),
        ("v=DMARC1; p=none; px=1", "unknown tag 'px'"),
        ("v=DMARC1; p=none; p=reject", "appears more than once"),
        ("v=DMARC1; p=none; fo=2", "fo=2"),
        ("v=DMARC1; p=none; garbage", "'garbage' is not tag=value"),
    ],
)
def test_bad_tags_are_reported(text, fragment):
    _, errors = parse_dmarc(text)
    assert any(fragment in error for error in errors), errors


def test_report_size_limits_and_several_addresses_are_accepted():
    _, errors = parse_dmarc(
        "v=DMARC1; p=reject; rua=mailto:a@x.test!10m,mailto:b@y.test; ruf=mailto:f@x.test; fo=0:d"
    )
    assert errors == []


POLICY = st.sampled_from(POLICIES)
LOCAL = st.from_regex(r"[a-z][a-z0-9.-]{0,10}[a-z0-9]", fullmatch=True)
DOMAIN = st.from_regex(r"[a-z][a-z0-9]{0,8}\.(test|example)", fullmatch=True)
URIS = st.lists(st.builds(lambda local, d: f"mailto:{local}@{d}", LOCAL, DOMAIN), max_size=3, unique=True)


@given(
    policy=POLICY,
    rua=URIS,
    ruf=URIS,
    sp=st.none() | POLICY,
    np=st.none() | POLICY,
    psd=st.none() | st.sampled_from(["n", "u"]),
    adkim=st.sampled_from("rs"),
    aspf=st.sampled_from("rs"),
    testing=st.booleans(),
)
def test_every_generated_record_parses_back_to_its_inputs_without_a_warning(
    policy, rua, ruf, sp, np, psd, adkim, aspf, testing
):
    text = build_dmarc(policy, rua, ruf, sp, adkim, aspf, np=np, psd=psd, testing=testing)
    result = check_dmarc(text)
    assert result.errors == [] and result.warnings == []
    tags = result.tags
    assert list(tags)[:2] == ["v", "p"] and tags["p"] == policy
    assert tags.get("sp") == sp and tags.get("np") == np and tags.get("psd") == psd
    assert tags.get("t") == ("y" if testing else None)
    assert set(tags) <= set(KNOWN_TAGS)
    assert report_addresses(tags) == list(dict.fromkeys(u.removeprefix("mailto:") for u in rua + ruf))


def test_legacy_tags_of_rfc_7489_are_warnings_not_errors():
    result = check_dmarc("v=DMARC1; p=quarantine; pct=10; rf=afrf; ri=86400; rua=mailto:a@x.test!10m")
    assert result.errors == []
    assert result.warnings == [
        "pct=10: use t=y while testing a policy (pct was removed in RFC 9989)",
        "rf=afrf: reports are always AFRF (rf was removed in RFC 9989)",
        "ri=86400: aggregate reports are daily (ri was removed in RFC 9989)",
        "rua: the size limit in 'mailto:a@x.test!10m' is ignored since RFC 9989",
    ]
    # A legacy tag with a broken value is still an error: the record is wrong, not merely old.
    assert "pct=150 must be a whole number" in check_dmarc("v=DMARC1; p=none; pct=150").errors[0]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("v=DMARC1; p=none; t=maybe", "t=maybe must be y or n"),
        ("v=DMARC1; p=none; np=drop", "np=drop is not one of"),
        ("v=DMARC1; p=none; psd=x", "psd=x must be y, n or u"),
        ("v=DMARC1; p=none; fo=0:1", "0 and 1 exclude each other"),
    ],
)
def test_dmarcbis_tag_values_are_checked(text, fragment):
    assert any(fragment in error for error in check_dmarc(text).errors)


@pytest.mark.parametrize(
    ("domain", "destination", "needed"),
    [
        ("acme.test", "acme.test", False),
        ("news.acme.test", "acme.test", False),
        ("acme.test", "reports.acme.test", False),
        ("acme.test", "penguinmails.test", True),
        ("acme.test", "xacme.test", True),
    ],
)
def test_reports_to_another_organization_need_its_authorisation(domain, destination, needed):
    assert needs_authorization(domain, destination) is needed


def _config(dmarc: dict, **mail):
    return validate_config(
        {
            "fleet": {"nodes": 1},
            "dns": {"zones": [{"name": "acme.test"}]},
            "tenants": [{"slug": "acme", "domains": [{"name": "acme.test", "dmarc": dmarc}]}],
            "mail": mail,
        }
    )


def test_pct_in_config_is_refused_naming_the_field_and_the_replacement():
    with pytest.raises(ConfigError) as caught:
        _config({"policy": "quarantine", "pct": 10})
    (reason,) = caught.value.reasons
    assert reason.startswith("penguinmails:tenants[0].domains[0].dmarc.pct: pct was removed in RFC 9989")
    assert "testing: true" in reason


def test_psd_y_is_refused_for_a_sending_domain():
    with pytest.raises(ConfigError, match=r"dmarc\.psd: .*public suffix domain"):
        _config({"psd": "y"})


def test_report_domain_must_be_ours_and_its_node_must_exist():
    with pytest.raises(ConfigError) as caught:
        _config({}, reports={"domain": "elsewhere.test", "node": 3})
    text = str(caught.value)
    assert "mail.reports.domain: no zone in dns.zones contains elsewhere.test" in text
    assert "mail.reports.node: node 3 does not exist (fleet.nodes is 1)" in text
