"""DnsRecordSet against a real BIND started by the devenv service: apply, no-op, drift, ownership, TSIG,
safety, conflicts, compare-and-swap, rotation, verification. Each test has its own zone on one server."""

from __future__ import annotations

import datetime as dt

import pytest

from modules.config.loader import validate_config
from modules.dns import resources
from modules.dns.changes import plan_changes
from modules.dns.dkim import dkim_txt, generate_key
from modules.dns.errors import DnsAuthError, DnsConcurrentChange, DnsConflict, DnsSafetyError
from modules.dns.generate import NodeAddresses, plan_mail_dns
from modules.dns.records import Record
from modules.dns.resources import DnsRecordSetProvider
from modules.dns.rfc2136 import Change
from modules.dns.verify import CHECKS, verify
from tests.support.dns import client, live, lookup, out_of_band, private_bind, provider_env, recordset_props

ZONES = [f"z{i}.test" for i in range(1, 11)] + ["18.198.in-addr.arpa"]
PUBLIC = generate_key()[1]


@pytest.fixture(scope="module")
def bind(tmp_path_factory):
    with private_bind(tmp_path_factory.mktemp("bind"), ZONES, key_name="pm-itest") as service:
        yield service


@pytest.fixture
def provider(bind, monkeypatch):
    for key, value in provider_env(bind).items():
        monkeypatch.setenv(key, value)
    return DnsRecordSetProvider()


def mail_records(zone: str, ip: str = "192.0.2.1") -> list[dict]:
    return [
        {"name": zone, "type": "MX", "values": [f"10 mail.{zone}"]},
        {"name": f"mail.{zone}", "type": "A", "ttl": 300, "values": [ip]},
        {"name": zone, "type": "TXT", "values": [f"v=spf1 ip4:{ip} ~all"]},
        {"name": f"pm1._domainkey.{zone}", "type": "TXT", "values": [dkim_txt(PUBLIC)]},
        {"name": f"_dmarc.{zone}", "type": "TXT", "values": ["v=DMARC1; p=none"]},
    ]


def create(provider, bind, zone, records, **extra):
    checked = provider.check({}, recordset_props(bind, zone, records, **extra))
    assert checked.failures == [], [f.reason for f in checked.failures]
    return checked.inputs, provider.create(checked.inputs)


def test_apply_publishes_every_record_in_one_update_message(bind, provider):
    before = bind.update_messages()
    _, created = create(provider, bind, "z1.test", mail_records("z1.test"))
    assert bind.update_messages() - before == 1
    zone = live(bind, "z1.test")
    assert zone.rrsets[("z1.test", "MX")].values == ("10 mail.z1.test.",)
    assert zone.rrsets[("mail.z1.test", "A")].ttl == 300
    # The 2048-bit key is longer than one TXT string: the server holds it split and gives it back whole.
    assert zone.rrsets[("pm1._domainkey.z1.test", "TXT")].values == (dkim_txt(PUBLIC),)
    answer = lookup(bind)("pm1._domainkey.z1.test", "TXT")
    assert answer.values == (dkim_txt(PUBLIC),)
    assert len(created.outs["owned"]) == 5


def test_reapply_sends_no_update_message(bind, provider):
    _, created = create(provider, bind, "z2.test", mail_records("z2.test"))
    before = bind.update_messages()
    again = provider.check(created.outs, recordset_props(bind, "z2.test", mail_records("z2.test"))).inputs
    assert provider.diff("z2.test", created.outs, again).changes is False
    refreshed = provider.read("z2.test", created.outs)
    assert provider.diff("z2.test", refreshed.outs, again).changes is False
    provider.update("z2.test", refreshed.outs, again)  # even when asked, nothing needs sending
    assert bind.update_messages() == before


def test_drift_after_an_out_of_band_change_shows_and_is_repaired(bind, provider):
    inputs, created = create(provider, bind, "z3.test", mail_records("z3.test"))
    out_of_band(
        bind,
        "z3.test",
        Change("delete", "z3.test", "TXT", "v=spf1 ip4:192.0.2.1 ~all"),
        Change("add", "z3.test", "TXT", "v=spf1 +all", 3600),
        Change("delete", "mail.z3.test", "A", "192.0.2.1"),
    )
    refreshed = provider.read("z3.test", created.outs)
    shown = {(r["name"], r["type"]): r["values"] for r in refreshed.outs["records"]}
    assert shown[("z3.test", "TXT")] == ["v=spf1 +all"]
    assert ("mail.z3.test", "A") not in shown
    assert provider.diff("z3.test", refreshed.outs, inputs).changes is True
    before = bind.update_messages()
    provider.update("z3.test", refreshed.outs, inputs)
    assert bind.update_messages() - before == 1
    zone = live(bind, "z3.test")
    assert zone.rrsets[("z3.test", "TXT")].values == ("v=spf1 ip4:192.0.2.1 ~all",)
    assert zone.rrsets[("mail.z3.test", "A")].values == ("192.0.2.1",)


def test_records_the_stack_does_not_own_stay_untouched(bind, provider):
    out_of_band(
        bind,
        "z4.test",
        Change("add", "z4.test", "TXT", "site-verification=keep-me", 600),
        Change("add", "www.z4.test", "A", "192.0.2.80", 600),
        Change("add", "_dmarc.other.z4.test", "TXT", "v=DMARC1; p=reject", 600),
    )
    foreign = {
        key: value
        for key, value in live(bind, "z4.test").rrsets.items()
        if key[1] not in ("SOA",) and key != ("z4.test", "TXT")
    }
    _, created = create(provider, bind, "z4.test", mail_records("z4.test"))
    changed = provider.check(
        {}, recordset_props(bind, "z4.test", mail_records("z4.test", "192.0.2.2"))
    ).inputs
    updated = provider.update("z4.test", created.outs, changed)
    zone = live(bind, "z4.test")
    assert set(zone.rrsets[("z4.test", "TXT")].values) == {
        "site-verification=keep-me",
        "v=spf1 ip4:192.0.2.2 ~all",
    }
    provider.delete("z4.test", updated.outs)
    zone = live(bind, "z4.test")
    assert zone.rrsets[("z4.test", "TXT")].values == ("site-verification=keep-me",)
    for key, value in foreign.items():
        assert zone.rrsets[key] == value, key
    assert ("mail.z4.test", "A") not in zone.rrsets


def test_a_wrong_tsig_key_gives_a_clear_error_and_changes_nothing(bind, provider, monkeypatch):
    wrong = "c2VjcmV0LXRoYXQtaXMtbm90LXRoZS1zZXJ2ZXJzLWtleQ=="
    monkeypatch.setenv("PENGUINMAILS_TSIG_SECRET", wrong)
    inputs = provider.check({}, recordset_props(bind, "z5.test", mail_records("z5.test"))).inputs
    with pytest.raises(DnsAuthError) as error:
        provider.create(inputs)
    message = str(error.value)
    assert "TSIG key 'pm-itest' was rejected, the secret is wrong" in message
    assert (
        "PENGUINMAILS_TSIG_SECRET" in message and wrong not in message and bind.tsig_secret() not in message
    )
    with pytest.raises(DnsAuthError, match="does not know TSIG key 'nobody'"):
        client(bind, key_name="nobody").update("z5.test", [Change("add", "x.z5.test", "A", "192.0.2.1", 60)])
    assert ("mail.z5.test", "A") not in live(bind, "z5.test").rrsets


def test_a_run_that_changes_too_much_of_a_zone_is_refused_unless_forced(bind, provider, monkeypatch):
    records = [{"name": f"h{i}.z6.test", "type": "A", "values": [f"192.0.2.{i}"]} for i in range(1, 13)]
    _, created = create(provider, bind, "z6.test", records)
    shrunk = provider.check({}, recordset_props(bind, "z6.test", records[:3])).inputs
    before = bind.update_messages()
    with pytest.raises(
        DnsSafetyError, match=r"refusing to replace or delete 9 of 14 records \(64%, limit 50%\)"
    ):
        provider.update("z6.test", created.outs, shrunk)
    assert bind.update_messages() == before
    assert len([k for k in live(bind, "z6.test").rrsets if k[0].startswith("h")]) == 12
    monkeypatch.setenv("PENGUINMAILS_DNS_FORCE", "1")
    provider.update("z6.test", created.outs, shrunk)
    assert len([k for k in live(bind, "z6.test").rrsets if k[0].startswith("h")]) == 3


def test_an_existing_foreign_record_is_a_conflict_unless_adopted(bind, provider):
    out_of_band(bind, "z7.test", Change("add", "z7.test", "TXT", "v=spf1 include:elsewhere.test -all", 600))
    inputs = provider.check({}, recordset_props(bind, "z7.test", mail_records("z7.test"))).inputs
    before = bind.update_messages()
    with pytest.raises(
        DnsConflict, match=r"z7\.test TXT: already holds 'v=spf1 include:elsewhere\.test -all'"
    ):
        provider.create(inputs)
    assert bind.update_messages() == before
    provider.create({**inputs, "adopt_existing": True})
    assert live(bind, "z7.test").rrsets[("z7.test", "TXT")].values == ("v=spf1 ip4:192.0.2.1 ~all",)


def test_a_concurrent_change_makes_the_server_refuse_the_whole_message(bind, provider):
    _, created = create(provider, bind, "z8.test", mail_records("z8.test"))
    zone = live(bind, "z8.test")
    desired = [
        Record.from_dict(r)
        for r in provider.check(
            {}, recordset_props(bind, "z8.test", mail_records("z8.test", "192.0.2.9"))
        ).inputs["records"]
    ]
    plan = plan_changes("z8.test", desired, set(created.outs["owned"]), zone)
    out_of_band(bind, "z8.test", Change("add", "z8.test", "TXT", "v=spf1 -all", 60))
    with pytest.raises(DnsConcurrentChange, match="the zone changed since it was read"):
        client(bind).update("z8.test", plan.changes, plan.prerequisites)
    assert live(bind, "z8.test").rrsets[("mail.z8.test", "A")].values == ("192.0.2.1",)


def test_rotation_removes_the_old_selector_once_its_overlap_has_passed(bind, provider, monkeypatch):
    records = [
        *mail_records("z9.test"),
        {
            "name": "pm0._domainkey.z9.test",
            "type": "TXT",
            "values": [dkim_txt(PUBLIC)],
            "not_after": "2026-12-01T00:00:00+00:00",
        },
    ]
    monkeypatch.setattr(resources, "_now", lambda: dt.datetime(2026, 11, 25, tzinfo=dt.UTC))
    _, created = create(provider, bind, "z9.test", records)
    assert ("pm0._domainkey.z9.test", "TXT") in live(bind, "z9.test").rrsets
    monkeypatch.setattr(resources, "_now", lambda: dt.datetime(2026, 12, 2, tzinfo=dt.UTC))
    later = provider.check(created.outs, recordset_props(bind, "z9.test", records)).inputs
    assert provider.diff("z9.test", created.outs, later).changes is True
    provider.update("z9.test", created.outs, later)
    zone = live(bind, "z9.test")
    assert ("pm0._domainkey.z9.test", "TXT") not in zone.rrsets
    assert ("pm1._domainkey.z9.test", "TXT") in zone.rrsets


# No host serves the MTA-STS policy here: that check fetches it over HTTPS (tests/integration/test_mta_sts.py).
DNS_ONLY = [check for check in CHECKS if check != "MTA-STS"]


def test_verification_reads_the_live_server_and_names_what_fails(bind, provider):
    config = validate_config(
        {
            "fleet": {"nodes": 1, "rdns_domain": "fleet.z10.test"},
            "dns": {"zones": [{"name": "z10.test"}, {"name": "18.198.in-addr.arpa"}]},
            "tenants": [{"slug": "ten", "domains": [{"name": "z10.test"}]}],
        }
    )
    plan = plan_mail_dns(config, {1: NodeAddresses("198.18.0.10")}, {("z10.test", "pm1"): PUBLIC})
    for zone, records in plan.records.items():
        create(provider, bind, zone, [r.to_dict() for r in records])
    (report,) = verify(plan.expectations, lookup(bind), checks=DNS_ONLY)
    assert report.passed, report.failures()
    out_of_band(bind, "z10.test", Change("delete", "_dmarc.z10.test", "TXT", "v=DMARC1; p=none"))
    (report,) = verify(plan.expectations, lookup(bind), checks=DNS_ONLY)
    assert [(r.check, r.reason) for r in report.failures()] == [
        ("DMARC", "_dmarc.z10.test has 0 DMARC records; exactly one is needed")
    ]


def test_refresh_of_a_zone_the_server_no_longer_serves_reports_it_gone(bind, provider):
    gone = provider.read("nothere.test", recordset_props(bind, "nothere.test", [], owned=[]))
    assert gone.id == "" and gone.outs == {}
