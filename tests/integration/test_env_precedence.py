"""A production stack run from a shell that sourced ``tools/env.sh`` never reaches the local dev services.

``tools/env.sh`` exports the devenv's addresses and admin credentials (``PENGUINMAILS_*``). Only a dev stack
may read them; this test runs the whole project as a production-like stack (endpoints in config on closed
loopback ports, fake secrets in secret config) under exactly the environment that file produces, and proves
from the services' own counters that nothing reached them: the Hostwinds simulator's call log, Redis
``total_connections_received``, PostgreSQL ``pg_stat_database.sessions`` and BIND's request counters. The
preview and the update fail (the production endpoints are closed); their messages must name those
endpoints, which shows the providers tried them instead.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest
import redis
from psycopg import sql
from pulumi import automation as auto

from devenv.registry import services
from modules.config.model import TIERS
from modules.engine import REPO_ROOT
from modules.hostwinds.client import HostwindsClient
from tests.support.engine import project_stack

# serial: it counts every request the shared dev services receive and pauses their exporters, so under
# pytest-xdist no other test may run meanwhile (the other workers wait, see tests/conftest.py).
pytestmark = [pytest.mark.engine, pytest.mark.services, pytest.mark.serial]

# Each measurement opens one connection of its own to Redis and one session in PostgreSQL.
OWN_CONNECTIONS = {"hostwinds_calls": 0, "redis_connections": 1, "postgres_sessions": 1, "bind_requests": 0}
# The dev services' ports (simulator, Redis, PostgreSQL, BIND and its statistics channel).
DEV_PORTS = {8930, 6390, 5433, 5353, 8053}
PORT_NAMES = ("hostwinds", "postgres", "redis", "dns", "resolver")
# devenv services that read the dev services on their own (issue 12's exporters).
MONITORING_POLLERS = ("postgres-exporter", "redis-exporter", "bind-exporter", "penguinmails-exporter")


def sourced_env_sh() -> dict[str, str]:
    """The environment of a shell after ``source tools/env.sh`` (the real file), started without any
    devenv or engine variable so that everything it holds comes from the file."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PENGUINMAILS_", "PULUMI_", "PYTEST_"))}
    done = subprocess.run(
        ["bash", "-c", "source tools/env.sh && env -0"],
        cwd=REPO_ROOT,
        env=clean,
        capture_output=True,
        check=True,
        timeout=120,
    )
    pairs = (item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)
    return dict(pairs)


def closed_ports(count: int, avoid: set[int]) -> list[int]:
    """Loopback ports nobody listens on (bound once by the kernel's choice, then released)."""
    found: list[int] = []
    while len(found) < count:
        with contextlib.closing(socket.socket()) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port in avoid or port in found:
            continue
        with contextlib.closing(socket.socket()) as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                found.append(port)
    return found


class DevServices:
    """The counters of the shared dev services, read the way they record requests themselves."""

    def __init__(self, env: dict[str, str]):
        by_name = {service.name: service for service in services()}
        self.sim_stats_url = f"{by_name['hostwinds'].admin_url}/stats"
        self.bind = by_name["bind"]
        self.env = env

    def hostwinds_calls(self) -> int:
        with urllib.request.urlopen(self.sim_stats_url, timeout=10) as answer:
            return int(json.loads(answer.read())["total"])

    def redis_admin(self) -> redis.Redis:
        return redis.Redis(
            host=self.env["PENGUINMAILS_REDIS_HOST"],
            port=int(self.env["PENGUINMAILS_REDIS_PORT"]),
            password=self.env["PENGUINMAILS_REDIS_ADMIN_PASSWORD"],
            socket_timeout=10,
        )

    def postgres_admin(self) -> psycopg.Connection:
        return psycopg.connect(
            host=self.env["PENGUINMAILS_POSTGRES_HOST"],
            port=int(self.env["PENGUINMAILS_POSTGRES_PORT"]),
            user=self.env["PENGUINMAILS_POSTGRES_ADMIN_USER"],
            password=self.env["PENGUINMAILS_POSTGRES_ADMIN_PASSWORD"],
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        )

    def redis_connections(self) -> int:
        client = self.redis_admin()
        try:
            return int(client.info("stats")["total_connections_received"])
        finally:
            client.close()

    def postgres_sessions(self) -> int:
        with self.postgres_admin() as conn:
            row = conn.execute("SELECT coalesce(sum(sessions), 0)::bigint FROM pg_stat_database").fetchone()
            return int(row[0])

    def bind_requests(self) -> int:
        """Every DNS message BIND received (queries, updates, transfers; UDP and TCP)."""
        stats = self.bind.stats().get("nsstats", {})
        return int(stats.get("Requestv4", 0)) + int(stats.get("Requestv6", 0))

    def counters(self) -> dict[str, int]:
        return {name: getattr(self, name)() for name in OWN_CONNECTIONS}

    def quiet_baseline(self, attempts: int = 10) -> dict[str, int]:
        """Counters at a moment when nothing else is using the services (two readings a second apart
        differ only by our own measuring connection), so a later difference is ours to explain."""
        before = self.counters()
        for _ in range(attempts):
            time.sleep(1)
            now = self.counters()
            if all(now[k] - before[k] == OWN_CONNECTIONS[k] for k in OWN_CONNECTIONS):
                return now
            before = now
        pytest.fail(f"the dev services are busy with something else (counters kept moving: {before})")


@pytest.fixture
def env_sh(devenv_env) -> Iterator[dict[str, str]]:
    env = sourced_env_sh()
    # The file really exported the dev services (devenv_env started them if they were not running).
    assert env["PENGUINMAILS_HOSTWINDS_ENDPOINT"] == devenv_env["PENGUINMAILS_HOSTWINDS_ENDPOINT"]
    for key in ("HOSTWINDS_API_KEY", "POSTGRES_ADMIN_PASSWORD", "REDIS_ADMIN_PASSWORD", "TSIG_SECRET"):
        assert env[f"PENGUINMAILS_{key}"] == devenv_env[f"PENGUINMAILS_{key}"]
    # The devenv's exporters poll Redis, PostgreSQL and BIND all the time; the counters must move only for
    # the stack under test, so they pause for it (and start again, with their config, afterwards).
    pollers = [s for s in services() if s.name in MONITORING_POLLERS]
    was_running = [s for s in pollers if s.running()]
    for service in was_running:
        service.stop()
    try:
        yield env
    finally:
        for service in was_running:
            service.start()


def postgres_tier(environment: str, port: int, tier: str, prefix: str) -> dict:
    """Production: a server URL. Staging: a local tier, the kind whose address a dev stack would take
    from the devenv's PENGUINMAILS_POSTGRES_* (here on a closed port)."""
    if environment == "production":
        return {
            "url": f"postgresql://pm_admin@127.0.0.1:{port}/pm_{tier}?sslmode=require",
            "name_prefix": prefix,
        }
    return {
        "mode": "local",
        "host": "127.0.0.1",
        "port": port,
        "admin_user": "pm_admin",
        "name_prefix": prefix,
    }


def production_config(environment: str, ports: dict[str, int], token: str) -> dict:
    zone, static_zone = f"envprec-{token}.example", f"static-{token}.example"
    return {
        "environment": environment,
        "hostwinds": {
            "endpoint": f"https://127.0.0.1:{ports['hostwinds']}/cloud/api.php",
            "request_timeout_seconds": 5,
            "poll_interval_seconds": 1,
            "lost_answer_wait_seconds": 0,
            "create_attempts": 1,
        },
        # The devenv's operator key name and TSIG key name on purpose: only the devenv could satisfy them.
        "fleet": {"nodes": 1, "rdns_domain": f"fleet.{zone}", "ssh_key_names": ["penguinmails-dev-operator"]},
        "postgres": {
            tier: postgres_tier(environment, ports["postgres"], tier, f"pm_envprec_{token}") for tier in TIERS
        },
        "redis": {
            "mode": "server",
            "host": "127.0.0.1",
            "port": ports["redis"],
            "queue_user": f"pm-envprec-{token}",
        },
        "dns": {
            "zones": [
                {
                    "name": zone,
                    "server": "127.0.0.1",
                    "port": ports["dns"],
                    "tsig_key_name": "penguinmails-dev",
                },
                # Records that depend on nothing, so the update reaches this zone's server too.
                {
                    "name": static_zone,
                    "server": "127.0.0.1",
                    "port": ports["dns"],
                    "tsig_key_name": "penguinmails-dev",
                    "records": [{"name": "www", "type": "A", "values": ["192.0.2.10"]}],
                },
            ],
            "resolvers": [f"127.0.0.1:{ports['resolver']}"],
        },
        "tenants": [{"slug": "acme", "domains": [{"name": f"acme.{zone}", "sending_node": 1}]}],
    }


FAKE_SECRETS = {
    "hostwindsApiKey": "fake-production-hostwinds-key",
    "redisAdminPassword": "fake-production-redis-password",
    "postgresAdminPassword": "fake-production-postgres-password",
    "tsigSecret": base64.b64encode(b"fake-production-tsig-secret-000").decode(),
}


def run_engine(operation, **kwargs) -> tuple[str, bool]:
    """The engine's whole output (stdout, and stderr of a failure) and whether the operation succeeded."""
    lines: list[str] = []
    try:
        operation(color="never", on_output=lines.append, **kwargs)
    except auto.CommandError as error:
        return "\n".join(lines) + "\n" + str(error), False
    return "\n".join(lines), True


def remove_dev_leftovers(env: dict[str, str], stack_name: str, queue_user: str, prefix: str) -> None:
    """After a failed run only: what a broken rule would have made on the dev services, removed again
    (a simulated server is a podman container; a Redis ACL user and PostgreSQL objects would stay)."""
    sim = HostwindsClient(env["PENGUINMAILS_HOSTWINDS_ENDPOINT"], env["PENGUINMAILS_HOSTWINDS_API_KEY"])
    with contextlib.suppress(Exception):
        for row in sim.instance_list():
            if str(row.get("srvrname", "")).startswith(f"{stack_name}-"):
                sim.instance_terminate(int(row["serviceid"]))
    with contextlib.suppress(Exception):
        DevServices(env).redis_admin().execute_command("ACL", "DELUSER", queue_user)
    with contextlib.suppress(Exception), DevServices(env).postgres_admin() as conn:
        like = prefix.replace("_", r"\_") + "%"
        for (name,) in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", [like]
        ).fetchall():
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        for (name,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", [like]).fetchall():
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_production_stack_under_env_sh_reaches_no_dev_service(tmp_path, env_sh, environment):
    started = time.monotonic()
    token = secrets.token_hex(3)
    stack_name = f"{environment[:4]}{token}"
    ports = dict(zip(PORT_NAMES, closed_ports(len(PORT_NAMES), DEV_PORTS), strict=True))
    config = production_config(environment, ports, token)
    stack = project_stack(
        tmp_path,
        stack_name,
        config=config,
        secrets=FAKE_SECRETS,
        # Exactly what `source tools/env.sh` left, except where state lives: this test's own backend (never
        # the repository's .state/) and its own Ansible inventory and cache folders (local paths only).
        extra_env={
            **{k: v for k, v in env_sh.items() if k not in ("PULUMI_HOME", "PULUMI_BACKEND_URL")},
            "PENGUINMAILS_ANSIBLE_INVENTORY_DIR": str(tmp_path / "inventory"),
            "PENGUINMAILS_ANSIBLE_STATE_DIR": str(tmp_path / "ansible-state"),
        },
    )
    dev = DevServices(env_sh)
    before = dev.quiet_baseline()
    reached_nothing = False
    try:
        preview_started = time.monotonic()
        preview_output, _ = run_engine(stack.preview)
        preview_seconds = time.monotonic() - preview_started
        after_preview = dev.counters()
        assert after_preview == {k: before[k] + OWN_CONNECTIONS[k] for k in before}, (
            f"the preview reached a dev service: {before} -> {after_preview}\n{preview_output[-4000:]}"
        )
        # The preview tried the production Hostwinds endpoint of the config (its catalogue check).
        assert f"127.0.0.1:{ports['hostwinds']}" in preview_output, preview_output[-4000:]

        # Redis, PostgreSQL and BIND are only contacted when something is created, which a preview never
        # does: the update tries every resource it can (continue on error) and fails on the closed ports.
        up_output, up_succeeded = run_engine(stack.up, continue_on_error=True)
        after_up = dev.counters()
        assert after_up == {k: after_preview[k] + OWN_CONNECTIONS[k] for k in before}, (
            f"the update reached a dev service: {after_preview} -> {after_up}\n{up_output[-4000:]}"
        )
        reached_nothing = True
    finally:
        if not reached_nothing:
            remove_dev_leftovers(env_sh, stack_name, config["redis"]["queue_user"], f"pm_envprec_{token}")

    assert not up_succeeded
    for where in ("redis", "postgres", "dns"):
        assert f"127.0.0.1:{ports[where]}" in up_output, f"{where}: {up_output[-4000:]}"
    # Expected failures (closed ports) read as one line per resource, never a Python traceback.
    assert "Traceback (most recent call last)" not in up_output, up_output[-4000:]
    for output in (preview_output, up_output):
        for port in DEV_PORTS:
            assert f"127.0.0.1:{port}" not in output
        for key in ("HOSTWINDS_API_KEY", "POSTGRES_ADMIN_PASSWORD", "REDIS_ADMIN_PASSWORD", "TSIG_SECRET"):
            assert env_sh[f"PENGUINMAILS_{key}"] not in output
    # Nothing to destroy anywhere real: the only resources made are local (generated secrets, DKIM keys)
    # and live in this test's own backend under tmp_path.
    print(f"{environment}: preview {preview_seconds:.1f} s, whole test {time.monotonic() - started:.1f} s")
