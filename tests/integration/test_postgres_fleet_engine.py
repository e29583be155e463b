"""`pulumi up` with ``postgres.oltp.mode: fleet`` and ``replicas: 1``: the OLTP tier on a VPS of its own and
a streaming replica, both ordered from a private simulator with podman nodes, certified by the tier's CA,
converged with the postgresql role; then the tier's roles, database and migrations on it, through the real
program. The primary backs up with pgBackRest to a private s3 (moto) on the podman gateway: one encrypted
full backup, WAL archiving that passes ``pgbackrest check``, cron entries; the replica runs no pgBackRest.

The key attacks of the isolation suite (tests/integration/test_postgres_attacks.py) run against the fleet
tier as its app and readonly roles; the ``readonly_replica_url`` output reads the rows from the standby and
cannot write; the replication lag gauge reads the replica; a second preview plans nothing.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from prometheus_client.core import GaugeMetricFamily
from pulumi import automation as auto

from devenv.podman_hosts import PodmanHosts
from devenv.prometheus import PODMAN_GATEWAY
from devenv.s3 import BUCKET, S3Service
from modules.ansible import runner
from modules.monitoring import replication
from modules.monitoring.exporter import ExporterConfig
from modules.monitoring.replication import replication_lag_seconds
from modules.postgres.client import ServerTarget, ca_file, connect
from modules.postgres.duties import duties_for
from tests.integration import test_postgres_attacks as attacks
from tests.support.engine import project_stack
from tests.support.hostwinds import free_port, hostwinds_section, private_simulator
from tests.support.postgres import TierDb, seed_tenants
from tests.support.rls import TENANT_A, TENANT_B, count, parent_tables

pytestmark = [pytest.mark.engine, pytest.mark.services]

GATEWAY_PROBE = "10.88.0.2"  # any address on podman's bridge: the route says this machine's source there


def _bridge_source() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((GATEWAY_PROBE, 5432))
        return probe.getsockname()[0]


def _config(sim) -> dict:
    return {
        "environment": "dev",
        "redis": {"queue_user": f"pm-fp-{uuid.uuid4().hex[:8]}", "port": 6390},
        "postgres": {
            "oltp": {
                "mode": "fleet",
                "vps": {
                    "replicas": 1,
                    "ssh_key_names": ["penguinmails-dev-operator"],
                    "rdns_domain": "pg.penguinmails.test",
                    "memory_mb": 512,
                    "allowed_networks": [f"{_bridge_source()}/32"],
                },
            },
            **{tier: {"enabled": False} for tier in ("content", "analytics", "queue")},
            "backup": {
                "bucket": BUCKET,
                "oltp": {"full_schedule": "15 3 * * 0", "diff_schedule": "15 3 * * 1-6"},
            },
        },
        "hostwinds": hostwinds_section(sim),
    }


def test_up_orders_converges_and_migrates_a_fleet_tier_with_a_replica(tmp_path, devenv_env, monkeypatch):
    prefix = f"pm-fp{uuid.uuid4().hex[:6]}"
    # A private s3 on the podman gateway (the shared one listens on loopback, out of the hosts' reach).
    s3 = S3Service(root=tmp_path / "s3root", port=free_port(), host=PODMAN_GATEWAY)
    s3.start()
    backup_secrets = {
        "PENGUINMAILS_S3_ACCESS_KEY": f"fleetbackup-{secrets.token_hex(8)}",
        "PENGUINMAILS_S3_SECRET_KEY": secrets.token_urlsafe(32),
        "PENGUINMAILS_BACKUP_CIPHER_PASS": secrets.token_urlsafe(36),
    }
    try:
        with private_simulator(tmp_path / "sim", backend="podman", podman_prefix=prefix) as sim:
            operator_key, _ = sim.service.operator_key()
            stack = project_stack(
                tmp_path,
                "dev",
                config=_config(sim),
                extra_env={
                    **sim.env(),
                    "PENGUINMAILS_FLEET_SSH_PRIVATE_KEY": str(operator_key),
                    "PENGUINMAILS_ANSIBLE_INVENTORY_DIR": str(tmp_path / "inventory"),
                    "PENGUINMAILS_ANSIBLE_STATE_DIR": str(tmp_path / "ansible-state"),
                    "PENGUINMAILS_FLEET_S3_ENDPOINT": s3.endpoint,
                    "PENGUINMAILS_FLEET_S3_CA_FILE": str(s3.ca_file),
                    **backup_secrets,
                },
            )
            try:
                _exercise(stack, tmp_path)
                _check_backups(stack, PodmanHosts(prefix), s3, tmp_path, backup_secrets)
                _second_converge_changes_nothing(
                    stack, PodmanHosts(prefix), tmp_path, operator_key, monkeypatch
                )
            finally:
                with contextlib.suppress(auto.CommandError):
                    stack.destroy(color="never")
            stack.workspace.remove_stack("dev")
    finally:
        PodmanHosts(prefix).clear()
        s3.stop()


def _pgbackrest(container: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "podman",
            "exec",
            container,
            "runuser",
            "-u",
            "postgres",
            "--",
            "pgbackrest",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=check,
    )


def _containers(stack, hosts: PodmanHosts) -> tuple[str, str]:
    """The simulator's containers (named after service ids) of the primary and the replica, by address."""
    outputs = stack.outputs()
    by_ip = {ip: name for name, ip in hosts.list().items()}
    primary = urlsplit(outputs["postgres_oltp_app_url"].value).hostname
    replica = urlsplit(outputs["postgres_oltp_readonly_replica_url"].value).hostname
    return by_ip[primary], by_ip[replica]


def _check_backups(
    stack, hosts: PodmanHosts, s3: S3Service, tmp_path, backup_secrets: dict[str, str]
) -> None:
    """The primary's stanza holds one full backup in the private bucket, encrypted; WAL archives; cron runs
    full and diff as postgres; the replica has no pgBackRest; no backup secret in any file the run left."""
    primary, replica = _containers(stack, hosts)
    (info,) = json.loads(_pgbackrest(primary, "--stanza=fleet-oltp", "info", "--output=json").stdout)
    assert info["status"]["code"] == 0, info["status"]
    assert [b["type"] for b in info["backup"]] == ["full"]
    assert info["cipher"] == "aes-256-cbc"
    keys = [
        o["Key"]
        for o in s3.client().list_objects_v2(Bucket=BUCKET, Prefix="penguinmails/dev/").get("Contents", [])
    ]
    assert any(k.endswith("backup/fleet-oltp/backup.info") for k in keys), keys
    assert any("archive/fleet-oltp/15-1/" in k for k in keys), keys
    (info_key,) = [k for k in keys if k.endswith("backup/fleet-oltp/backup.info")]
    stored = s3.client().get_object(Bucket=BUCKET, Key=info_key)["Body"].read()
    assert b"db-version" not in stored and b"backup:current" not in stored  # ciphertext, not the INI text

    # Archiving works after the backup too: a WAL switch, then check (it waits for the segment in the repo).
    subprocess.run(
        ["podman", "exec", primary, "runuser", "-u", "postgres", "--",
         "psql", "-X", "-At", "-c", "SELECT pg_switch_wal()"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert _pgbackrest(primary, "--stanza=fleet-oltp", "check").returncode == 0
    crontab = subprocess.run(
        ["podman", "exec", primary, "crontab", "-l", "-u", "postgres"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "15 3 * * 0 pgbackrest --stanza=fleet-oltp --type=full backup" in crontab
    assert "15 3 * * 1-6 pgbackrest --stanza=fleet-oltp --type=diff backup" in crontab
    mode = subprocess.run(
        ["podman", "exec", primary, "stat", "-c", "%a %U %G", "/etc/pgbackrest/pgbackrest.conf"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    assert mode == ["640", "root", "postgres"]
    # Only the primary backs up: the replica has neither pgBackRest's settings nor a cron entry.
    replica = subprocess.run(
        ["podman", "exec", replica, "test", "-e", "/etc/pgbackrest/pgbackrest.conf"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert replica.returncode == 1
    # No backup secret in the Ansible artifacts, inventories or the state backend (the private s3's own
    # folder holds its key, so it is left out).
    leaked = []
    for path in tmp_path.rglob("*"):
        if path.is_file() and "s3root" not in path.parts:
            text = path.read_bytes()
            leaked += [(str(path), name) for name, value in backup_secrets.items() if value.encode() in text]
    assert not leaked


def _second_converge_changes_nothing(stack, hosts: PodmanHosts, tmp_path, operator_key, monkeypatch) -> None:
    """The tier's playbook run again with the inputs in state (the export shows secrets): nothing changes,
    the backup tasks included (no second stanza-create, no second full backup)."""
    state = stack.export_stack().deployment
    (playbook,) = [
        r
        for r in state["resources"]
        if r["type"].endswith("Playbook") and "postgres-oltp-host-playbook" in r["urn"]
    ]
    secret = playbook["inputs"]["secret_vars"]
    secret = json.loads(secret["plaintext"]) if isinstance(secret, dict) and "plaintext" in secret else secret
    monkeypatch.setenv(runner.STATE_DIR_ENV, str(tmp_path / "ansible-state"))
    monkeypatch.setenv(runner.SSH_KEY_ENV, str(operator_key))
    started = time.monotonic()
    run = runner.run_playbook(
        "postgresql.yml",
        Path(playbook["outputs"]["inventory_path"]).read_text(),
        stack="dev",
        extra_vars=runner.whole_numbers(playbook["inputs"]["vars"]),
        secret_vars=runner.whole_numbers(secret),
    )
    print(f"second converge: {time.monotonic() - started:.0f} s")
    results = run.host_results()
    assert sorted(results) == ["pg-oltp-01", "pg-oltp-r01"]
    assert [(r["changed"], r["failed"]) for r in results.values()] == [(0, 0), (0, 0)], results
    (info,) = json.loads(
        _pgbackrest(_containers(stack, hosts)[0], "--stanza=fleet-oltp", "info", "--output=json").stdout
    )
    assert [b["type"] for b in info["backup"]] == ["full"]


def _secret_results(state: dict) -> dict[str, str]:
    """GeneratedSecret results by resource name (the export shows secrets in plain text)."""
    found = {}
    for resource in state["resources"]:
        result = (resource.get("outputs") or {}).get("result")
        if resource["type"].endswith("GeneratedSecret") and result is not None:
            value = result.get("plaintext", result) if isinstance(result, dict) else result
            found[resource["urn"].rsplit("::", 1)[1]] = value.strip('"')
    return found


def _exercise(stack, tmp_path):
    started = time.monotonic()
    up = stack.up(color="never")
    assert up.summary.result == "succeeded"
    print(f"\nfleet tier up: {time.monotonic() - started:.0f} s")
    outputs = stack.outputs()
    results = outputs["postgres_oltp_host_results"].value
    assert sorted(results) == ["pg-oltp-01", "pg-oltp-r01"]
    assert [r["failed"] for r in results.values()] == [0, 0]
    ca_pem = outputs["postgres_oltp_ca_certificate"].value
    assert not outputs["postgres_oltp_ca_certificate"].secret and "BEGIN CERTIFICATE" in ca_pem
    root = ca_file(ca_pem)
    app_url = outputs["postgres_oltp_app_url"]
    replica_url = outputs["postgres_oltp_readonly_replica_url"]
    assert app_url.secret and replica_url.secret
    assert "sslmode=verify-full" in app_url.value and "sslmode=verify-full" in replica_url.value

    state = stack.export_stack().deployment
    # The explicit server input (admin password, CA) of every tier resource is a secret in state, and no
    # plaintext state file of the backend holds the admin password or a private key.
    secret_sig = "4dabf18193072939515e22adb298388d"
    servers = 0
    for resource in state["resources"]:
        for part in ("inputs", "outputs"):
            value = (resource.get(part) or {}).get("server")
            if value is not None:
                servers += 1
                assert isinstance(value, dict) and secret_sig in value, (resource["urn"], part)
    # migrator, database, extensions, migrations, schedule, login roles: inputs and outputs each
    assert servers >= 10
    passwords = _secret_results(state)
    admin_password = passwords["penguinmails-postgres-oltp-admin-password"]
    backend = [p.read_text() for p in (tmp_path / "state" / "backend").rglob("*.json")]
    assert backend and not any(admin_password in text or "PRIVATE KEY" in text for text in backend)

    # Migrations ran on the fleet host: the ledger holds every file.
    with psycopg.connect(app_url.value, sslrootcert=root, connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "pm_dev_oltp_app"
        tls = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert tls == (True, "TLSv1.3")
        host = conn.info.host
    target = ServerTarget(host, 5432, "postgres", admin_password, "verify-full", sslrootcert=root)
    db = TierDb("oltp", "pm_dev", target)
    db.passwords = {
        role: passwords[f"penguinmails-oltp-{role}-password"] for role in ("migrator", *duties_for("oltp"))
    }
    with db.connect() as conn:
        ledger = conn.execute("SELECT count(*) FROM pm_meta.schema_migrations").fetchone()[0]
    assert ledger == len(outputs_migrations(state)) > 0
    # pg_cron (for the tiers with partition maintenance; oltp has none) is preloaded and installable.
    with connect(target, "postgres") as conn:
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        available = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_cron'"
        ).fetchone()
    assert set(preload.split(",")) == {"pg_stat_statements", "pg_cron"} and available == (1,)

    # The isolation suite's key attacks, as app and readonly, against the fleet tier.
    seed_tenants(db, [TENANT_A, TENANT_B])
    for kind in ("app", "readonly"):
        case = (db, kind)
        attacks.test_tenant_a_cannot_read_tenant_b_through_any_table(case)
        attacks.test_tenant_a_cannot_change_or_delete_tenant_b_rows(case)
        attacks.test_tenant_a_cannot_insert_for_or_move_rows_to_tenant_b(case)
        attacks.test_no_tenant_facing_role_can_become_another_role(case)
        attacks.test_no_tenant_facing_role_can_create_objects_anywhere(case)
        attacks.test_a_fresh_tier_has_no_role_drift(case)
        attacks.test_no_function_gives_tenant_a_anything_of_tenant_b(case)
    attacks.test_tenant_a_cannot_reach_tenant_b_users({"oltp": db})
    attacks.test_oltp_fleet_tables_are_out_of_reach({"oltp": db})

    # The replica: tenant A's rows through RLS, and no write at all.
    with db.connect() as conn:
        table = next(t for t in parent_tables(conn) if t.schema == "app")
        wanted = count(conn, table, "tenant_id = %s", [TENANT_A])
    assert wanted > 0
    deadline = time.monotonic() + 60
    with psycopg.connect(replica_url.value, sslrootcert=root, connect_timeout=10, autocommit=True) as standby:
        assert standby.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        assert standby.info.host != host
        while True:
            with standby.transaction(force_rollback=True):
                standby.execute("SELECT set_config('app.tenant_id', %s, true)", [str(TENANT_A)])
                seen = count(standby, table)
            if seen == wanted or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert seen == wanted
        with pytest.raises(psycopg.Error, match="during recovery"):
            with standby.transaction():
                standby.execute("SET TRANSACTION READ WRITE")
                standby.execute("CREATE TEMP TABLE x (v int)")
    lag = replication_lag_seconds(replica_url.value, sslrootcert=root)
    assert lag is not None and 0 <= lag < 60
    # The penguinmails exporter's config carries the replica, and its gauge reads it.
    exporter = ExporterConfig.model_validate(outputs["monitoring_exporter_config"].value)
    assert [(r.tier, r.url) for r in exporter.replicas] == [("oltp", replica_url.value)]
    up = GaugeMetricFamily("penguinmails_source_up", "", labels=["source"])
    (gauge,) = replication.collect(exporter.replicas, 5.0, up)
    assert [(s.labels, s.value < 60) for s in gauge.samples] == [({"tier": "oltp"}, True)]
    assert [(s.labels, s.value) for s in up.samples] == [({"source": "replica_oltp"}, 1.0)]

    preview = stack.preview(color="never", expect_no_changes=True)
    assert set(preview.change_summary) == {"same"}


def outputs_migrations(state: dict) -> dict:
    found = next(
        r for r in state["resources"] if r["type"].endswith("SchemaMigrations") and "oltp" in r["urn"]
    )
    return found["outputs"]["migrations"]
