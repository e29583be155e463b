"""DNSBL checks against a private BIND, their OLTP writes as the reputation role, and the exporter's /metrics.

The DNSBL is the devenv's zone (``dnsbl.penguinmails.test``) on a private BIND with its own port and key; a
second zone answers everything with Spamhaus' public-resolver code to stand for a list that refuses us.
Nothing here queries a public zone.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devenv.bind import free_port
from modules.config.reputation import DEV_ZONE
from modules.dns.rfc2136 import Change
from modules.monitoring.exporter import Exporter, load_config
from modules.postgres.client import connection_url, tenant_transaction
from modules.queue.store import enqueue
from modules.reputation import dnsbl
from modules.reputation.dnsbl import Outcome, Zone, reverse_ip
from modules.reputation.quarantine import plan_transports
from modules.reputation.store import ReputationStore
from tests.support.dns import client, private_bind
from tests.support.postgres import TierDb, provision, teardown

pytestmark = pytest.mark.services

REFUSING_ZONE = "refused.penguinmails.test"
T1, T2 = uuid.UUID(int=0x71), uuid.UUID(int=0x72)
IP_A, IP_B, IP_C, IP_D = "192.0.2.10", "192.0.2.11", "2001:db8::10", "192.0.2.20"
INTERVAL = 2.0


@pytest.fixture(scope="module")
def bind(tmp_path_factory) -> Iterator:
    with private_bind(tmp_path_factory.mktemp("dnsbl"), [DEV_ZONE, REFUSING_ZONE]) as service:
        client(service).update(
            REFUSING_ZONE, [Change("add", f"*.{REFUSING_ZONE}.", "A", "127.255.255.254", 60)]
        )
        yield service


def _list(bind, ip: str, reason: str = "listed by the test") -> None:
    name = f"{reverse_ip(ip)}.{DEV_ZONE}."
    client(bind).update(
        DEV_ZONE, [Change("add", name, "A", "127.0.0.2", 60), Change("add", name, "TXT", reason, 60)]
    )


def _clear(bind, ip: str, reason: str = "listed by the test") -> None:
    name = f"{reverse_ip(ip)}.{DEV_ZONE}."
    client(bind).update(
        DEV_ZONE, [Change("delete", name, "A", "127.0.0.2"), Change("delete", name, "TXT", reason)]
    )


def _url(db: TierDb, kind: str) -> str:
    return connection_url(
        db.role(kind), db.passwords[kind], db.target.host, db.target.port, db.database, "disable"
    )


@pytest.fixture(scope="module")
def oltp(devenv_env) -> Iterator[TierDb]:
    """An OLTP tier with two tenants: t1 sends a.example from A and b.example from B (C, IPv6, is t1's
    spare), t2 sends c.example from D. Every IP is warmed."""
    db = provision("oltp")
    try:
        with db.connect("migrator") as conn:
            vps = conn.execute(
                "INSERT INTO fleet.vps_instances (hostwinds_instance_id, ip_address, status) "
                "VALUES ('hw-rep', %s, 'active') RETURNING id",
                [IP_A],
            ).fetchone()[0]
            ids = {
                ip: conn.execute(
                    "INSERT INTO fleet.smtp_ip_addresses (vps_instance_id, ip_address, status) "
                    "VALUES (%s, %s, 'warmed') RETURNING id",
                    [vps, ip],
                ).fetchone()[0]
                for ip in (IP_A, IP_B, IP_C, IP_D)
            }
            for tenant, domains in (
                (T1, {"a.example": IP_A, "b.example": IP_B, "spare.example": IP_C}),
                (T2, {"c.example": IP_D}),
            ):
                with tenant_transaction(conn, tenant):
                    conn.execute("INSERT INTO app.tenants (tenant_id, name) VALUES (%s, 'T')", [tenant])
                    for domain, ip in domains.items():
                        domain_id = conn.execute(
                            "INSERT INTO app.domains (tenant_id, domain) VALUES (%s, %s) RETURNING id",
                            [tenant, domain],
                        ).fetchone()[0]
                        conn.execute(
                            "INSERT INTO app.domain_ip_assignments (tenant_id, domain_id, smtp_ip_address_id, "
                            "status, warmup_state) VALUES (%s, %s, %s, 'active', 'warmed')",
                            [tenant, domain_id, ids[ip]],
                        )
        yield db
    finally:
        teardown(db)


def test_checks_tell_listed_clean_refused_and_ipv6_apart(bind):
    _list(bind, IP_A, "spam trap hit")
    _list(bind, IP_C, "v6 listing")
    try:
        results = dnsbl.check(
            [IP_A, IP_B, IP_C], [Zone(DEV_ZONE), Zone(REFUSING_ZONE)], [f"{bind.host}:{bind.port}"], timeout=2
        )
    finally:
        _clear(bind, IP_A, "spam trap hit")
        _clear(bind, IP_C, "v6 listing")
    found = {(r.ip, r.zone): r for r in results}
    assert found[(IP_A, DEV_ZONE)].outcome is Outcome.LISTED
    assert found[(IP_A, DEV_ZONE)].codes == ("127.0.0.2",)
    assert found[(IP_A, DEV_ZONE)].reason == "spam trap hit"
    assert found[(IP_B, DEV_ZONE)].outcome is Outcome.CLEAN
    assert (
        found[(IP_C, DEV_ZONE)].outcome is Outcome.LISTED and found[(IP_C, DEV_ZONE)].reason == "v6 listing"
    )
    for ip in (IP_A, IP_B, IP_C):
        refused = found[(ip, REFUSING_ZONE)]
        assert refused.outcome is Outcome.ERROR, "a refused query must never count as a listing"
        assert "refused/unusable" in refused.reason
    # The RFC 5782 test entry the devenv zone carries.
    probe = dnsbl.check(["127.0.0.2"], [Zone(DEV_ZONE)], [f"{bind.host}:{bind.port}"])
    assert probe[0].outcome is Outcome.LISTED


def test_a_resolver_that_does_not_answer_is_an_error_not_clean():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # receives, never answers
        port = silent.getsockname()[1]
        results = dnsbl.check([IP_A], [Zone(DEV_ZONE)], [f"127.0.0.1:{port}"], timeout=0.5)
    assert results[0].outcome is Outcome.ERROR and results[0].reason == "timeout"


def test_the_reputation_role_only_executes_its_functions(oltp):
    with psycopg.connect(_url(oltp, "reputation"), autocommit=True) as conn:
        for table in ("fleet.smtp_ip_addresses", "app.domain_ip_assignments", "app.domains"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT 1 FROM {table} LIMIT 1")  # noqa: S608 - constant names
        store = ReputationStore(_url(oltp, "reputation"))
        unknown = dnsbl.IpVerdict("198.51.100.1", Outcome.LISTED, ())
        recorded = store.record(unknown, datetime.now(UTC))
        assert recorded.known is False and recorded.assignments == 0
        store.close()
    with oltp.connect("app") as app, tenant_transaction(app, T1):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("SELECT * FROM reputation.ip_states()")


def _write_config(path, data) -> str:
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return str(path)


def _scrape(exporter: Exporter) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(exporter.url, timeout=10) as answer:
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _wait(exporter: Exporter, key, value, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if _scrape(exporter).get(key) == value:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{key} did not become {value} within {timeout} s: {_scrape(exporter)}")


@pytest.fixture(scope="module")
def queue_db(devenv_env) -> Iterator[TierDb]:
    db = provision("queue")
    try:
        with db.connect("migrator") as conn:
            conn.execute(
                "INSERT INTO platform.job_queues (name, default_priority, max_attempts, retry_base, retry_cap, "
                "lock_duration) VALUES ('rep-test', 100, 3, '1 second', '1 minute', '1 minute')"
            )
        with db.connect("app") as app, tenant_transaction(app, T1):
            enqueue(app, "rep-test", [{"n": 1}, {"n": 2}], priority=150)
        yield db
    finally:
        teardown(db)


def test_listing_quarantines_within_an_interval_and_clearing_restores_warming(bind, oltp, queue_db, tmp_path):
    redis_url = (
        f"redis://default:{os.environ['PENGUINMAILS_REDIS_ADMIN_PASSWORD']}@"
        f"{os.environ['PENGUINMAILS_REDIS_HOST']}:{os.environ['PENGUINMAILS_REDIS_PORT']}/0"
    )
    _write_config(
        tmp_path / "exporter-itest.json",
        {
            "stack": "itest",
            "queue": {
                "worker_url": _url(queue_db, "worker"),
                "redis_url": redis_url,
                "namespace": f"queue:{{itest-{secrets.token_hex(3)}}}:",
            },
            "oltp_url": _url(oltp, "reputation"),
            "sending_ips": [IP_A, IP_B, IP_C, IP_D],
            "dnsbl_zones": [{"name": DEV_ZONE, "query_key": None}],
            "resolvers": [f"{bind.host}:{bind.port}"],
            "check_interval_seconds": INTERVAL,
        },
    )
    exporter = Exporter(load_config(tmp_path / "exporter-itest.json"), f"127.0.0.1:{free_port()}").start()
    store = ReputationStore(_url(oltp, "reputation"))
    try:
        quarantined_a = ("penguinmails_ip_quarantined", (("ip", IP_A),))
        _wait(exporter, quarantined_a, 0.0, timeout=INTERVAL * 3 + 5)
        metrics = _scrape(exporter)
        assert metrics[("penguinmails_dnsbl_listed", (("ip", IP_A), ("zone", DEV_ZONE)))] == 0.0
        assert metrics[("penguinmails_source_up", (("source", "postgres_queue"),))] == 1.0
        assert metrics[("penguinmails_source_up", (("source", "redis"),))] == 1.0
        assert metrics[("penguinmails_source_up", (("source", "postgres_oltp"),))] == 1.0
        assert metrics[("penguinmails_queue_ready", (("priority", "150"), ("queue", "rep-test")))] == 2.0
        assert metrics[("penguinmails_queue_dead_letters", (("queue", "rep-test"),))] == 0.0
        assert metrics[("penguinmails_queue_in_flight", (("queue", "rep-test"),))] == 0.0
        assert metrics[("penguinmails_queue_oldest_ready_age_seconds", (("queue", "rep-test"),))] >= 0
        assert metrics[("penguinmails_dnsbl_check_timestamp_seconds", ())] > time.time() - 60

        _list(bind, IP_A, "trap")
        detected = _wait(exporter, quarantined_a, 1.0, timeout=INTERVAL * 2 + 5)
        print(f"listing detected after {detected:.1f} s (interval {INTERVAL} s)")
        assert _scrape(exporter)[("penguinmails_dnsbl_listed", (("ip", IP_A), ("zone", DEV_ZONE)))] == 1.0
        with oltp.connect("migrator") as conn:
            status, state, document, checked = conn.execute(
                "SELECT status, reputation_state, provider_blacklist_status, last_reputation_check "
                "FROM fleet.smtp_ip_addresses WHERE ip_address = %s",
                [IP_A],
            ).fetchone()
            marked = conn.execute(
                "SELECT count(*) FROM app.domain_ip_assignments a JOIN fleet.smtp_ip_addresses s "
                "ON s.id = a.smtp_ip_address_id WHERE s.ip_address = %s AND a.quarantined_since IS NOT NULL",
                [IP_A],
            ).fetchone()[0]
        assert (status, state) == ("quarantined", "critical")
        assert document[DEV_ZONE] == {"state": "listed", "codes": ["127.0.0.2"], "reason": "trap"}
        assert checked is not None and marked == 1
        plan = plan_transports(*store.assignments())
        # a.example leaves A for t1's other warmed IP with the fewest domains (C, the spare's, ties with B
        # broken by load: B sends b.example); never t2's D.
        assert plan["a.example"] in (IP_B, IP_C) and plan["a.example"] != IP_D
        assert plan["c.example"] == IP_D and plan["b.example"] == IP_B

        _clear(bind, IP_A, "trap")
        _wait(exporter, quarantined_a, 0.0, timeout=INTERVAL * 2 + 5)
        with oltp.connect("migrator") as conn:
            status, state = conn.execute(
                "SELECT status, reputation_state FROM fleet.smtp_ip_addresses WHERE ip_address = %s", [IP_A]
            ).fetchone()
            marked = conn.execute(
                "SELECT count(*) FROM app.domain_ip_assignments WHERE quarantined_since IS NOT NULL"
            ).fetchone()[0]
        assert (status, state) == ("warming", "fair") and marked == 0
        assert plan_transports(*store.assignments())["a.example"] == IP_A
    finally:
        store.close()
        exporter.stop()


def test_unreachable_sources_are_reported_and_the_scrape_still_answers(tmp_path, bind):
    closed = free_port()
    _write_config(
        tmp_path / "exporter-down.json",
        {
            "stack": "itest",
            "queue": {
                "worker_url": f"postgresql://nobody:pw@127.0.0.1:{closed}/nothing",
                "redis_url": f"redis://127.0.0.1:{closed}/0",
                "namespace": "queue:{down}:",
            },
            "oltp_url": f"postgresql://nobody:pw@127.0.0.1:{closed}/nothing",
            "sending_ips": [IP_B],
            "dnsbl_zones": [{"name": DEV_ZONE}],
            "resolvers": [f"{bind.host}:{bind.port}"],
            "check_interval_seconds": 60,
            "scrape_timeout_seconds": 1,
        },
    )
    exporter = Exporter(load_config(tmp_path / "exporter-down.json"), f"127.0.0.1:{free_port()}").start()
    try:
        _wait(exporter, ("penguinmails_source_up", (("source", "postgres_oltp"),)), 0.0, timeout=15)
        metrics = _scrape(exporter)
        assert metrics[("penguinmails_source_up", (("source", "postgres_queue"),))] == 0.0
        assert metrics[("penguinmails_source_up", (("source", "redis"),))] == 0.0
        assert metrics[("penguinmails_source_up", (("source", "dnsbl"),))] == 1.0
        # Without OLTP the verdict itself says whether the IP would be quarantined.
        assert metrics[("penguinmails_ip_quarantined", (("ip", IP_B),))] == 0.0
        assert not any(name.startswith("penguinmails_queue_") for name, _ in metrics)
    finally:
        exporter.stop()


VERIFY_ZONE = "verify.penguinmails.test"


def test_dns_verification_is_exported_per_domain_and_check(tmp_path, tmp_path_factory):
    """The exporter runs `dns verify`'s checks on a timer: a published MX passes, a missing DKIM key fails."""
    with private_bind(tmp_path_factory.mktemp("verify"), [VERIFY_ZONE]) as server:
        domain, host = f"shop.{VERIFY_ZONE}", f"mx.{VERIFY_ZONE}"
        client(server).update(
            VERIFY_ZONE,
            [Change("add", f"{domain}.", "MX", f"10 {host}.", 60), Change("add", f"{host}.", "A", IP_A, 60)],
        )
        expectation = {
            "domain": domain,
            "mail_host": host,
            "sending_ips": [IP_A],
            "dkim_keys": [["pm1", "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAnotpublished"]],
            "dmarc_policy": "v=DMARC1; p=quarantine",
        }
        _write_config(
            tmp_path / "exporter-dns.json",
            {
                "stack": "itest",
                "dns_verification": [expectation],
                "dns_resolvers": [f"{server.host}:{server.port}"],
                "dns_interval_seconds": 60,
            },
        )
        exporter = Exporter(load_config(tmp_path / "exporter-dns.json"), f"127.0.0.1:{free_port()}").start()
        try:
            _wait(exporter, ("penguinmails_dns_verify_failing", (("domain", domain),)), 1.0, timeout=30)
            metrics = _scrape(exporter)
            check = "penguinmails_dns_verify_check_failing"
            assert metrics[(check, (("check", "mx"), ("domain", domain)))] == 0.0
            assert metrics[(check, (("check", "dkim"), ("domain", domain)))] == 1.0
            assert metrics[("penguinmails_dns_verify_timestamp_seconds", ())] > time.time() - 60
        finally:
            exporter.stop()
