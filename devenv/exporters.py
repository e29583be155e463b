"""Debian's Prometheus exporters for the devenv's own servers: PostgreSQL, Redis and BIND.

Each logs in with a credential of its own, never the admin's: a ``pg_monitor`` login role on PostgreSQL and
a read-only ACL user on Redis, both made (or reset to their kept password) on every start; BIND's exporter
reads the server's statistics channel (127.0.0.1:8053). Credentials reach the daemons through files or
their environment, never the command line (``ps`` shows it to every user). Each writes its own file_sd
target (``<targets>/<job>/devenv.json``) so Prometheus scrapes it with ``stack=devenv``.
"""

from __future__ import annotations

import json
from pathlib import Path

from devenv.base import ProcessService, ServiceStatus
from devenv.bind import BindService
from devenv.postgres import PostgresService
from devenv.prometheus import write_targets
from devenv.redis import RedisService
from modules.errors import DevenvError

POSTGRES_EXPORTER_PORT = 9387
BIND_EXPORTER_PORT = 9389
REDIS_EXPORTER_PORT = 9391
MONITOR_ROLE = "penguinmails_monitor"
REDIS_MONITOR_USER = "penguinmails-monitor"
# What redis_exporter runs (INFO, CONFIG GET for the limits, SLOWLOG, LATENCY, per-db key counts); no key
# or write access. CONFIG GET also shows settings, not passwords: ACL users carry those, not requirepass.
REDIS_MONITOR_RULES = (
    "resetkeys",
    "resetchannels",
    "-@all",
    "+ping",
    "+info",
    "+config|get",
    "+client|setname",
    "+client|info",
    "+slowlog|get",
    "+slowlog|len",
    "+latency|latest",
    "+dbsize",
    "+select",
    "+role",
)


class PostgresExporterService(ProcessService):
    name = "postgres-exporter"
    port = POSTGRES_EXPORTER_PORT
    binary = "prometheus-postgres-exporter"
    package = "prometheus-postgres-exporter"

    def __init__(
        self, root: Path | None = None, port: int | None = None, postgres: PostgresService | None = None
    ):
        super().__init__(root, port)
        self.root = root
        self.postgres = postgres or PostgresService(root)

    @property
    def password_file(self) -> Path:
        return self.dir / "monitor.password"

    def ensure_role(self) -> None:
        """The exporter's login role: ``pg_monitor`` (statistics views, no table data), few connections."""
        import psycopg
        from psycopg import sql

        target = self.postgres.env()
        password = self.secret("monitor.password")
        try:
            with psycopg.connect(
                host=target["PENGUINMAILS_POSTGRES_HOST"],
                port=int(target["PENGUINMAILS_POSTGRES_PORT"]),
                user=target["PENGUINMAILS_POSTGRES_ADMIN_USER"],
                password=target["PENGUINMAILS_POSTGRES_ADMIN_PASSWORD"],
                dbname="postgres",
                connect_timeout=10,
                autocommit=True,
            ) as conn:
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [MONITOR_ROLE]).fetchone()
                verb = sql.SQL("ALTER") if exists else sql.SQL("CREATE")
                conn.execute(
                    sql.SQL(
                        "{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT 3 PASSWORD {}"
                    ).format(verb, sql.Identifier(MONITOR_ROLE), sql.Literal(password))
                )
                conn.execute(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(MONITOR_ROLE)))
        except psycopg.Error as exc:
            raise DevenvError(
                f"postgres-exporter: cannot make role {MONITOR_ROLE} on {self.postgres.address}: {exc}"
            ) from None

    def prepare(self) -> None:
        if not self.postgres.running():
            raise DevenvError(f"postgres-exporter: PostgreSQL on {self.postgres.address} is not running")
        self.ensure_role()
        write_targets(self.root, "postgres", [self.address], {"component": "postgres/devenv"})

    def process_env(self) -> dict[str, str]:
        # URI and user in the environment, the password in its 0600 file: neither argv nor environ hold it.
        return {
            "DATA_SOURCE_URI": f"{self.postgres.address}/postgres?sslmode=disable",
            "DATA_SOURCE_USER": MONITOR_ROLE,
            "DATA_SOURCE_PASS_FILE": str(self.password_file),
        }

    def command(self) -> list[str]:
        return [f"--web.listen-address={self.address}", "--log.level=warn"]

    def env(self) -> dict[str, str]:
        return {
            "PENGUINMAILS_POSTGRES_MONITOR_USER": MONITOR_ROLE,
            "PENGUINMAILS_POSTGRES_MONITOR_PASSWORD": self.secret("monitor.password"),
        }


class RedisExporterService(ProcessService):
    name = "redis-exporter"
    port = REDIS_EXPORTER_PORT
    binary = "prometheus-redis-exporter"
    package = "prometheus-redis-exporter"

    def __init__(self, root: Path | None = None, port: int | None = None, redis: RedisService | None = None):
        super().__init__(root, port)
        self.root = root
        self.redis = redis or RedisService(root)

    def ensure_user(self) -> None:
        """The exporter's ACL user (read-only commands, no keys), saved to the server's ACL file."""
        import redis

        password = self.secret("monitor.password")
        client = redis.Redis(
            host=self.redis.host,
            port=self.redis.port,
            password=self.redis.env()["PENGUINMAILS_REDIS_ADMIN_PASSWORD"],
            socket_timeout=10,
        )
        try:
            client.execute_command(
                "ACL", "SETUSER", REDIS_MONITOR_USER, "reset", "on", f">{password}", *REDIS_MONITOR_RULES
            )
            client.execute_command("ACL", "SAVE")
        except redis.RedisError as exc:
            raise DevenvError(
                f"redis-exporter: cannot make ACL user on {self.redis.address}: {exc}"
            ) from None
        finally:
            client.close()

    @property
    def password_file(self) -> Path:
        return self.dir / "monitor.passwords.json"

    def prepare(self) -> None:
        if not self.redis.running():
            raise DevenvError(f"redis-exporter: Redis on {self.redis.address} is not running")
        self.ensure_user()
        # The exporter's password file: a JSON map of server URI to password, read at start (mode 0600).
        self.password_file.write_text(json.dumps({self.redis_uri: self.secret("monitor.password")}))
        self.password_file.chmod(0o600)
        write_targets(self.root, "redis", [self.address], {"component": "redis"})

    @property
    def redis_uri(self) -> str:
        return f"redis://{self.redis.address}"

    def process_env(self) -> dict[str, str]:
        # The exporter's own variables (its flags' defaults): the password is neither in argv nor environ.
        return {
            "REDIS_ADDR": self.redis_uri,
            "REDIS_USER": REDIS_MONITOR_USER,
            "REDIS_PASSWORD_FILE": str(self.password_file),
        }

    def command(self) -> list[str]:
        return [f"-web.listen-address={self.address}"]


class BindExporterService(ProcessService):
    name = "bind-exporter"
    port = BIND_EXPORTER_PORT
    binary = "prometheus-bind-exporter"
    package = "prometheus-bind-exporter"

    def __init__(self, root: Path | None = None, port: int | None = None, bind: BindService | None = None):
        super().__init__(root, port)
        self.root = root
        self.bind = bind or BindService(root)

    def prepare(self) -> None:
        write_targets(self.root, "bind", [self.address], {"component": "dns"})

    def command(self) -> list[str]:
        return [
            f"--web.listen-address={self.address}",
            f"--bind.stats-url=http://{self.bind.host}:{self.bind.stats_port}/",
            "--bind.stats-groups=server,view,tasks",
        ]

    def status(self) -> ServiceStatus:
        status = super().status()
        if status.running:
            detail = f"{status.detail}, statistics channel {self.bind.host}:{self.bind.stats_port}"
            return ServiceStatus(status.name, True, status.address, detail)
        return status
