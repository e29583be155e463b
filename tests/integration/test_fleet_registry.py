"""The fleet nodes' rows in the OLTP tier, through the FleetNode provider on a real tier database.

Registration, a lost answer's retry, a foreign row of the same Hostwinds id, an address change, drift and
delete are each driven through the provider against the devenv PostgreSQL with the tier's migrations.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from modules.postgres.client import PostgresError, connection_url
from modules.postgres.fleet_registry import FleetNodeArgs, FleetNodeProvider
from modules.reputation.dnsbl import IpVerdict, Outcome
from modules.reputation.store import ReputationStore
from tests.support.postgres import TierDb, provision, teardown

pytestmark = pytest.mark.services

MARK = "pulumi:penguinmails/itest/mx-01"


@pytest.fixture(scope="module")
def oltp(devenv_env):
    db = provision("oltp")
    try:
        yield db
    finally:
        teardown(db)


def _props(db: TierDb, **changes) -> dict:
    args = {
        "tier": "oltp",
        "database": db.database,
        "mark": MARK,
        "server_id": "4242",
        "hostname": "mx-01.fleet.example.net",
        "ip": "192.0.2.61",
        **changes,
    }
    return FleetNodeArgs(**args).props()


def _rows(db: TierDb) -> list[tuple]:
    with db.connect() as conn:
        return conn.execute(
            "SELECT v.id::text, v.hostwinds_instance_id, v.registered_by, host(s.ip_address), s.status "
            "FROM fleet.vps_instances v LEFT JOIN fleet.smtp_ip_addresses s ON s.vps_instance_id = v.id "
            "ORDER BY v.hostwinds_instance_id, s.ip_address"
        ).fetchall()


def test_a_node_is_registered_once_even_when_the_first_answer_was_lost(oltp):
    provider = FleetNodeProvider()
    props = _props(oltp)
    assert provider.check({}, props).failures == []
    created = provider.create(props)
    assert _rows(oltp) == [(created.id, "4242", MARK, "192.0.2.61", "warming")]
    # The engine never saw that answer and creates again: the marked row is adopted, not doubled.
    again = provider.create(props)
    assert (again.id, again.outs["ip_id"]) == (created.id, created.outs["ip_id"])
    assert len(_rows(oltp)) == 1
    assert provider.read(created.id, created.outs).outs["drift"] == []
    provider.delete(created.id, created.outs)
    assert _rows(oltp) == []


def test_a_row_of_the_same_hostwinds_id_without_our_mark_is_never_taken(oltp):
    with oltp.connect() as conn:
        conn.execute(
            "INSERT INTO fleet.vps_instances (hostwinds_instance_id, hostname, status) "
            "VALUES ('4242', 'by-hand.example.net', 'active')"
        )
    before = _rows(oltp)
    with pytest.raises(PostgresError, match="not marked as this node's; it is left alone"):
        FleetNodeProvider().create(_props(oltp))
    assert _rows(oltp) == before
    with oltp.connect() as conn:
        conn.execute("DELETE FROM fleet.vps_instances WHERE hostwinds_instance_id = '4242'")


def test_an_address_change_moves_the_ip_row_and_drift_is_read_back(oltp):
    provider = FleetNodeProvider()
    created = provider.create(_props(oltp))
    try:
        news = _props(oltp, ip="192.0.2.62", hostname="mx-01b.fleet.example.net")
        assert provider.diff(created.id, created.outs, news).changes
        assert not provider.diff(created.id, created.outs, news).replaces
        updated = provider.update(created.id, created.outs, news)
        assert _rows(oltp) == [(created.id, "4242", MARK, "192.0.2.62", "warming")]
        with oltp.connect() as conn:
            conn.execute("UPDATE fleet.vps_instances SET hostname = 'edited.example.net'")
        drift = provider.read(created.id, updated.outs).outs["drift"]
        assert drift == ["hostname is 'edited.example.net', not 'mx-01b.fleet.example.net'"]
        assert provider.diff(created.id, {**updated.outs, "drift": drift}, news).changes
        provider.update(created.id, updated.outs, news)
        assert provider.read(created.id, updated.outs).outs["drift"] == []
    finally:
        provider.delete(created.id, created.outs)


def test_delete_removes_only_the_recorded_marked_row(oltp):
    provider = FleetNodeProvider()
    created = provider.create(_props(oltp))
    other = provider.create(
        _props(oltp, mark="pulumi:penguinmails/itest/mx-02", server_id="4343", ip="192.0.2.63")
    )
    provider.delete(other.id, {**created.outs, "vps_id": other.id})  # our mark, another row's id
    provider.delete(created.id, {**created.outs, "mark": "pulumi:penguinmails/itest/mx-09"})  # not its mark
    assert len(_rows(oltp)) == 2
    provider.delete(created.id, created.outs)
    provider.delete(other.id, other.outs)
    assert _rows(oltp) == []
    assert provider.read(created.id, created.outs).id == ""  # gone: the next up registers it again


def test_the_dnsbl_checker_records_a_registered_nodes_listing(oltp):
    provider = FleetNodeProvider()
    created = provider.create(_props(oltp))
    url = connection_url(
        oltp.role("reputation"), oltp.passwords["reputation"], oltp.target.host, oltp.target.port,
        oltp.database, "disable",
    )  # fmt: skip
    store = ReputationStore(url, "itest")
    try:
        row = store.record(IpVerdict("192.0.2.61", Outcome.LISTED, ()), datetime.now(UTC))
        assert row.known and row.status == "quarantined"
        assert _rows(oltp)[0][4] == "quarantined"
    finally:
        store.close()
        provider.delete(created.id, created.outs)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("ip", "mx-01", "is not an IPv4 or IPv6 address"),
        ("mark", "mx-01", "pulumi:<project>/<stack>/<node>"),
        ("tier", "content", "lives in the oltp tier"),
        ("server_id", "", "non-empty"),
    ],
)
def test_bad_input_is_named_before_anything_changes(oltp, field, value, reason):
    failures = FleetNodeProvider().check({}, _props(oltp, **{field: value})).failures
    assert [(f.property, reason in f.reason) for f in failures] == [(field, True)]


def test_an_ip_another_vps_holds_is_never_taken(oltp):
    with oltp.connect() as conn:
        vps = conn.execute(
            "INSERT INTO fleet.vps_instances (hostwinds_instance_id, hostname, status) "
            "VALUES ('9999', 'by-hand.example.net', 'active') RETURNING id"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO fleet.smtp_ip_addresses (vps_instance_id, ip_address, status) VALUES (%s, '192.0.2.61', 'warmed')",
            [vps],
        )
    before = _rows(oltp)
    with pytest.raises(PostgresError, match=r"already fleet\.smtp_ip_addresses row .* of another VPS"):
        FleetNodeProvider().create(_props(oltp))
    assert _rows(oltp) == before  # the whole registration rolled back: no VPS row of ours either
    with oltp.connect() as conn:
        conn.execute("DELETE FROM fleet.vps_instances WHERE id = %s", [vps])


def test_every_sending_ip_of_a_node_has_its_own_row_and_a_dropped_one_goes(oltp):
    provider = FleetNodeProvider()
    extra = [
        {"name": "ip2", "address": "192.0.2.71", "fqdn": "mx-01-2.fleet.example.net"},
        {"name": "ip3", "address": "192.0.2.72", "fqdn": "mx-01-3.fleet.example.net"},
    ]
    plain = _props(oltp)
    created = provider.create(plain)
    try:
        news = _props(oltp, additional_ips=extra)
        assert provider.diff(created.id, created.outs, news).changes
        # State from before additional IPs has no such key: no change for a node that declares none.
        legacy = {k: v for k, v in created.outs.items() if k != "additional_ips"}
        assert not provider.diff(created.id, legacy, plain).changes
        updated = provider.update(created.id, created.outs, news)
        rows = _rows(oltp)
        assert [(r[3], r[4]) for r in rows] == [
            ("192.0.2.61", "warming"),
            ("192.0.2.71", "warming"),
            ("192.0.2.72", "warming"),
        ]
        with oltp.connect() as conn:
            names = dict(
                conn.execute("SELECT host(ip_address), rdns_hostname FROM fleet.smtp_ip_addresses").fetchall()
            )
        assert (
            names["192.0.2.72"] == "mx-01-3.fleet.example.net"
            and names["192.0.2.61"] == "mx-01.fleet.example.net"
        )
        assert provider.read(created.id, updated.outs).outs["drift"] == []
        with oltp.connect() as conn:
            conn.execute("DELETE FROM fleet.smtp_ip_addresses WHERE ip_address = '192.0.2.72'")
        assert provider.read(created.id, updated.outs).outs["drift"] == ["smtp_ip_addresses lacks 192.0.2.72"]
        fewer = provider.update(created.id, updated.outs, _props(oltp, additional_ips=extra[:1]))
        assert [r[3] for r in _rows(oltp)] == ["192.0.2.61", "192.0.2.71"]
        assert provider.read(created.id, fewer.outs).outs["drift"] == []
    finally:
        provider.delete(created.id, created.outs)
    assert _rows(oltp) == []
