"""The postgresql role on two real podman hosts: a primary and its streaming replica, converged twice.

A throw-away CA (modules.secrets.tls, as the stack's PrivateCa) signs one server certificate for both
hosts; every client here verifies it (sslmode=verify-full). The variables are made by
:mod:`modules.ansible.postgres_host`, as ``PostgresHost`` makes them. Only this machine's address on the
podman bridge is a listed network, so a login from the hosts' own addresses shows what pg_hba refuses.
"""

from __future__ import annotations

import secrets
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from modules.ansible import postgres_host, runner
from modules.secrets.tls import CaSpec, ServerCertSpec, issue, make_ca
from tests.infra.support import Lab

pytestmark = pytest.mark.services

PORT = postgres_host.DEFAULT_PORT


def _source_address(ip: str) -> str:
    """This machine's address towards ``ip`` (the podman bridge's gateway)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((ip, PORT))
        return probe.getsockname()[0]


@pytest.fixture(scope="module")
def converged(tmp_path_factory):
    """Primary and replica converged twice (the second run must be a no-op)."""
    folder = tmp_path_factory.mktemp("ansible-postgresql")
    lab = Lab(folder, kind="base")
    try:
        primary = lab.create("pg-1", "pg-1.penguinmails.test")
        replica = lab.create("pg-2", "pg-2.penguinmails.test")
        ca_pem, ca_key = make_ca(CaSpec("penguinmails test postgres CA"))
        cert_pem, key_pem = issue(
            ServerCertSpec((primary["fqdn"], replica["fqdn"]), (primary["ip"], replica["ip"], "127.0.0.1")),
            ca_pem,
            ca_key,
        )
        ca_file = folder / "ca.crt"
        ca_file.write_text(ca_pem)
        passwords = {"admin": secrets.token_urlsafe(32), "replication": secrets.token_urlsafe(32)}
        controller = _source_address(primary["ip"])
        plain = postgres_host.playbook_vars(
            tls_certificate=cert_pem,
            tls_ca_certificate=ca_pem,
            allowed_networks=[f"{controller}/32"],
            memory_mb=1024,
        )
        secret = postgres_host.secret_vars(
            admin_password=passwords["admin"],
            tls_private_key=key_pem,
            replication_password=passwords["replication"],
        )
        text = lab.inventory(
            group="postgres",
            playbook="postgresql.yml",
            host_vars=postgres_host.host_vars(primary, replica),
        )

        def converge(**overrides) -> runner.PlaybookRun:
            started = time.monotonic()
            run = runner.run_playbook(
                "postgresql.yml",
                text,
                stack=lab.prefix,
                extra_vars={**plain, **overrides},
                secret_vars=secret,
            )
            run.wall = time.monotonic() - started
            return run

        runs = [converge(), converge()]
        print(f"\npostgresql converge: first {runs[0].wall:.0f} s, second {runs[1].wall:.0f} s")
        yield {
            "lab": lab,
            "primary": primary,
            "replica": replica,
            "ca_file": ca_file,
            "key_pem": key_pem,
            "passwords": passwords,
            "runs": runs,
            "converge": converge,
        }
    finally:
        lab.close()


def _connect(converged, host: str = "primary", **overrides) -> psycopg.Connection:
    params = {
        "host": converged[host]["ip"],
        "port": PORT,
        "user": "postgres",
        "password": converged["passwords"]["admin"],
        "dbname": "postgres",
        "sslmode": "verify-full",
        "sslrootcert": str(converged["ca_file"]),
        "connect_timeout": 10,
        "autocommit": True,
        **overrides,
    }
    return psycopg.connect(**params)


def _exec(converged, host: str, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    name = converged["lab"].podman.container_name(host)
    return subprocess.run(
        ["podman", "exec", name, *command], capture_output=True, text=True, timeout=60, check=check
    )


def test_first_converge_changes_both_hosts_and_the_second_changes_nothing(converged):
    first, second = converged["runs"]
    for host in ("pg-1", "pg-2"):
        assert first.hosts[host].changed >= 5, host
        assert first.hosts[host].failed == 0
        assert second.host_results()[host]["changed"] == 0, host
        assert second.host_results()[host]["failed"] == 0
        assert second.host_results()[host]["ok"] > 5


def test_server_settings_come_from_the_role(converged):
    with _connect(converged) as conn:
        show = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]
            for name in (
                "data_checksums", "ssl", "ssl_min_protocol_version", "password_encryption", "wal_level",
                "shared_preload_libraries", "shared_buffers", "effective_cache_size", "archive_mode", "port",
            )
        }  # fmt: skip
        assert show["data_checksums"] == "on"
        assert show["ssl"] == "on" and show["ssl_min_protocol_version"] == "TLSv1.3"
        assert show["password_encryption"] == "scram-sha-256"
        assert show["wal_level"] == "replica"
        assert set(show["shared_preload_libraries"].split(",")) == {"pg_stat_statements", "pg_cron"}
        assert show["shared_buffers"] == "256MB" and show["effective_cache_size"] == "768MB"  # memory_mb 1024
        assert show["archive_mode"] == "off"  # no archive command given
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        # pg_stat_statements is loaded: its view answers once the extension exists.
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        assert conn.execute("SELECT count(*) FROM pg_stat_statements").fetchone()[0] >= 1
        assert conn.execute(
            "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'postgres'"
        ).fetchone()[0]


def _tls_version(ip: str, ca_file: Path, maximum: ssl.TLSVersion | None = None) -> str:
    """Speak PostgreSQL's SSLRequest, then a TLS handshake verified against the CA; the version agreed."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if maximum is not None:
        context.maximum_version = maximum
    with socket.create_connection((ip, PORT), timeout=5) as raw:
        raw.sendall(struct.pack("!ii", 8, 80877103))
        assert raw.recv(1) == b"S"
        with context.wrap_socket(raw, server_hostname=ip) as tls:
            return tls.version()


@pytest.mark.parametrize("host", ["primary", "replica"])
def test_tls_1_3_only_and_a_tls_1_2_client_is_refused(converged, host):
    ip = converged[host]["ip"]
    assert _tls_version(ip, converged["ca_file"]) == "TLSv1.3"
    with pytest.raises(ssl.SSLError):
        _tls_version(ip, converged["ca_file"], maximum=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(psycopg.OperationalError):
        _connect(converged, host, ssl_max_protocol_version="TLSv1.2").close()


def test_clients_verify_the_server_against_the_ca(converged, tmp_path):
    other_pem, _ = make_ca(CaSpec("another CA"))
    other = tmp_path / "other.crt"
    other.write_text(other_pem)
    with pytest.raises(psycopg.OperationalError, match=r"(?i)certificate verify failed"):
        _connect(converged, sslrootcert=str(other)).close()


def test_plain_connections_and_wrong_passwords_are_refused(converged):
    with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects connection"):
        _connect(converged, sslmode="disable").close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _connect(converged, password="wrong-" + secrets.token_hex(8)).close()


def test_a_network_that_is_not_listed_is_refused(converged):
    # From the host's own address (not a listed network), with the right password, over TLS.
    ip = converged["primary"]["ip"]
    done = _exec(
        converged, "pg-1", "env", f"PGPASSWORD={converged['passwords']['admin']}", "psql",
        f"host={ip} port={PORT} user=postgres dbname=postgres sslmode=require", "-Atc", "SELECT 1",
        check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "pg_hba.conf rejects connection" in done.stderr
    assert f'host "{ip}"' in done.stderr


def test_the_replica_streams_over_tls_and_refuses_writes(converged):
    token = secrets.token_hex(4)
    with _connect(converged) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS replicated (token text, v text)")
        conn.execute("INSERT INTO replicated VALUES (%s, 'written on the primary')", [token])
        replication = conn.execute(
            "SELECT r.application_name, r.state, s.ssl, s.version, r.sync_state FROM pg_stat_replication r "
            "JOIN pg_stat_ssl s USING (pid)"
        ).fetchall()
        assert replication == [("pg-2", "streaming", True, "TLSv1.3", "async")]
        slot = conn.execute("SELECT slot_name, active FROM pg_replication_slots").fetchall()
        assert slot == [(postgres_host.slot_name("pg-2"), True)]
    deadline = time.monotonic() + 30
    with _connect(converged, "replica") as standby:
        assert standby.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        assert standby.execute("SHOW data_checksums").fetchone()[0] == "on"
        while True:
            try:
                rows = standby.execute("SELECT v FROM replicated WHERE token = %s", [token]).fetchall()
            except psycopg.errors.UndefinedTable:
                rows = []
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert rows == [("written on the primary",)]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            standby.execute("INSERT INTO replicated VALUES (%s, 'x')", [token])


def test_files_on_the_hosts_keep_secrets_private(converged):
    for host in ("pg-1", "pg-2"):
        stat = _exec(converged, host, "stat", "-c", "%a %U", "/etc/postgresql/15/main/tls/server.key")
        assert stat.stdout.split() == ["600", "postgres"]
    assert _exec(converged, "pg-2", "stat", "-c", "%a %U", "/var/lib/postgresql/.pgpass").stdout.split() == [
        "600",
        "postgres",
    ]
    conf = _exec(converged, "pg-2", "cat", "/etc/postgresql/15/main/conf.d/penguinmails.conf").stdout
    assert "primary_conninfo" in conf and converged["passwords"]["replication"] not in conf
    log = _exec(converged, "pg-1", "sh", "-c", "cat /var/log/postgresql/*.log").stdout
    for password in converged["passwords"].values():
        assert password not in log


def test_runner_output_and_events_hold_no_secret(converged):
    folder = runner.state_dir() / "artifacts" / converged["lab"].prefix
    texts = [p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()]
    assert texts
    key_lines = [line for line in converged["key_pem"].splitlines() if "-----" not in line]
    for text in texts:
        for password in converged["passwords"].values():
            assert password not in text
        assert not any(line in text for line in key_lines)


def test_a_changed_setting_restarts_the_primary_and_the_replica_follows(converged):
    changed = converged["converge"](postgresql_max_connections=150)
    assert changed.hosts["pg-1"].changed >= 2  # the settings file, then the restart
    with _connect(converged) as conn:
        assert conn.execute("SHOW max_connections").fetchone()[0] == "150"
    back = converged["converge"]()
    assert back.hosts["pg-1"].changed >= 2
    deadline = time.monotonic() + 30
    while True:
        with _connect(converged) as conn:
            state = conn.execute("SELECT state FROM pg_stat_replication").fetchall()
        if state == [("streaming",)] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert state == [("streaming",)]
