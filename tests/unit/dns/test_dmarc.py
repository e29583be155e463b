"""DMARC tags: the generated record and the checks on hand-written ones."""

from __future__ import annotations

import pytest

from modules.dns.dmarc import build_dmarc, parse_dmarc, report_domains


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
