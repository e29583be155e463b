"""Connections to a tier's PostgreSQL server (psycopg 3) and the helpers every caller shares.

Every connection goes through :func:`connect`, which turns a refused or failed connection into a typed
error whose message never carries a password. The admin target of a tier comes from the ``postgres`` stack
config plus the secret ``postgresAdminPassword``; only a dev stack lets the devenv's
``PENGUINMAILS_POSTGRES_*`` variables override them (see :func:`server_target`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg
from psycopg import sql

from modules.config.model import PostgresTierConfig
from modules.errors import ToolkitError
from modules.providers import ProviderSettings, redact

T = TypeVar("T")

ENV_HOST = "PENGUINMAILS_POSTGRES_HOST"
ENV_PORT = "PENGUINMAILS_POSTGRES_PORT"
ENV_USER = "PENGUINMAILS_POSTGRES_ADMIN_USER"
ENV_PASSWORD = "PENGUINMAILS_POSTGRES_ADMIN_PASSWORD"  # noqa: S105 - a variable name
SECRET_KEY = "postgresAdminPassword"  # noqa: S105 - a config key
MAINTENANCE_DB = "postgres"


class PostgresError(ToolkitError):
    """PostgreSQL refused a statement; ``sqlstate`` is the server's error code when there is one."""

    def __init__(self, message: str, sqlstate: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate


class PostgresUnreachable(PostgresError):
    """The server could not be reached or refused the login."""


@dataclass(frozen=True)
class ServerTarget:
    """Where a tier's server is and who administers it. The password never shows in ``repr``."""

    host: str
    port: int
    user: str
    password: str | None = field(default=None, repr=False)
    sslmode: str = "prefer"
    connect_timeout: int = 10
    # A file with the CA that signed the server's certificate (verify-ca/verify-full); None: libpq's default.
    sslrootcert: str | None = None

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def redact(self, text: str, *extra: str | None) -> str:
        return redact(text, self.password, *extra)

    def with_login(self, user: str, password: str | None) -> ServerTarget:
        return ServerTarget(
            self.host, self.port, user, password, self.sslmode, self.connect_timeout, self.sslrootcert
        )


SERVER_KEYS = ("host", "port", "user", "password", "sslmode", "sslrootcert")


def ca_file(pem: str) -> str:
    """A file holding ``pem`` (a CA certificate, public) for libpq's ``sslrootcert``, named by its hash."""
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.gettempdir()) / f"penguinmails-postgres-ca-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{hashlib.sha256(pem.encode()).hexdigest()[:24]}.crt"
    if not path.exists() or path.read_text() != pem:
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(pem)
        partial.replace(path)
    return str(path)


def explicit_target(server: dict[str, Any]) -> ServerTarget:
    """The admin target a resource was given as its secret ``server`` input (a tier on a fleet VPS, whose
    address is known only once the VPS exists): host, port, user, password, sslmode, sslrootcert (PEM)."""
    missing = [key for key in ("host", "port", "user", "password") if not server.get(key)]
    if missing:
        raise ToolkitError(f"PostgreSQL server input: {', '.join(missing)} missing; run `pulumi up` again")
    pem = server.get("sslrootcert") or ""
    return ServerTarget(
        host=str(server["host"]),
        port=int(server["port"]),
        user=str(server["user"]),
        password=str(server["password"]),
        sslmode=str(server.get("sslmode") or "verify-full"),
        sslrootcert=ca_file(pem) if pem else None,
    )


def _for_tier(value: Any, tier: str) -> Any:
    """One password for every tier, or a JSON object keyed by tier."""
    return value.get(tier) if isinstance(value, dict) else value


def admin_password(settings: ProviderSettings, tier: str, env_var: str) -> str | None:
    """The admin password of ``tier``.

    Dev: ``env_var`` (a devenv variable), else ``postgresAdminPassword``. Staging/production: the secret
    ``postgresAdminPassword``, else the CI variable ``secretsFromEnv`` names for
    ``postgresAdminPassword.<tier>``, else the one it names for ``postgresAdminPassword``.
    """
    if settings.is_dev:
        return _for_tier(settings.credential(env_var, SECRET_KEY), tier) or None
    return (
        _for_tier(settings.get(SECRET_KEY), tier)
        or settings.ci_secret(f"{SECRET_KEY}.{tier}")
        or _for_tier(settings.ci_secret(SECRET_KEY), tier)
        or None
    )


def server_target(
    settings: ProviderSettings, tier: str, server: dict[str, Any] | None = None
) -> ServerTarget:
    """The admin connection of ``tier``.

    On a dev stack a local tier takes the devenv's ``PENGUINMAILS_POSTGRES_*`` first and a server tier
    ``PENGUINMAILS_POSTGRES_<TIER>_ADMIN_PASSWORD`` first; a server tier never takes its address from the
    environment. A staging or production stack reads only its config and secrets (see
    :func:`admin_password`), so a shell that sourced ``tools/env.sh`` cannot point it at the local cluster.
    """
    if server:
        return explicit_target(server)
    section = settings.section("postgres")
    raw = section.get(tier) or {}
    cfg = PostgresTierConfig.model_validate(raw if isinstance(raw, dict) else {})
    if cfg.mode == "fleet":
        raise ToolkitError(
            f"postgres.{tier}: a fleet tier's server is known only to the stack's resources (their server "
            "input); run this through `pulumi up`"
        )
    if cfg.mode == "local":
        return ServerTarget(
            host=settings.endpoint(ENV_HOST, cfg.host),
            port=int(settings.endpoint(ENV_PORT, cfg.port)),
            user=settings.endpoint(ENV_USER, cfg.admin_user),
            password=admin_password(settings, tier, ENV_PASSWORD),
            sslmode=cfg.sslmode,
        )
    return ServerTarget(
        host=cfg.host,
        port=cfg.port,
        user=cfg.admin_user,
        password=admin_password(settings, tier, f"PENGUINMAILS_POSTGRES_{tier.upper()}_ADMIN_PASSWORD"),
        sslmode=cfg.sslmode,
    )


# libpq reports a refused login as text only; these are the SQLSTATEs the server sent with it.
_LOGIN_ERRORS = (
    (re.compile(r"password authentication failed"), "28P01"),
    (re.compile(r'database "[^"]*" does not exist'), "3D000"),
    (re.compile(r"too many connections"), "53300"),
    (re.compile(r"no pg_hba.conf entry|is not permitted to log in"), "28000"),
)


def _login_sqlstate(message: str) -> str | None:
    return next((state for pattern, state in _LOGIN_ERRORS if pattern.search(message)), None)


def connect(
    target: ServerTarget,
    dbname: str = MAINTENANCE_DB,
    *,
    autocommit: bool = True,
    application_name: str = "penguinmails",
) -> psycopg.Connection:
    """Open one connection; errors name the server and database, never the password."""
    try:
        return psycopg.connect(
            host=target.host,
            port=target.port,
            user=target.user,
            password=target.password or "",
            dbname=dbname,
            sslmode=target.sslmode,
            connect_timeout=target.connect_timeout,
            **({"sslrootcert": target.sslrootcert} if target.sslrootcert else {}),
            application_name=application_name,
            autocommit=autocommit,
        )
    except psycopg.Error as exc:
        sqlstate = getattr(exc, "sqlstate", None) or _login_sqlstate(str(exc))
        raise PostgresUnreachable(
            f"PostgreSQL {target.label}/{dbname}: cannot connect: {target.redact(str(exc).strip())}", sqlstate
        ) from None


def run(target: ServerTarget, action: str, fn: Callable[[], T], *secrets_: str | None) -> T:
    """Call ``fn``; a server error becomes a :class:`PostgresError` saying what was being done."""
    try:
        return fn()
    except PostgresError:
        raise
    except psycopg.Error as exc:
        detail = target.redact(str(exc).strip(), *secrets_)
        raise PostgresError(f"PostgreSQL {target.label}: {action} failed: {detail}", exc.sqlstate) from None


@contextmanager
def tenant_transaction(
    conn: psycopg.Connection, tenant_id: Any, user_id: Any | None = None
) -> Iterator[psycopg.Connection]:
    """One transaction scoped to a tenant: ``app.tenant_id`` is set with ``set_config(…, true)``.

    Transaction-local, so a pooled connection (PgBouncer transaction mode) never carries it over; it is the
    first statement, so nothing runs before the fence is up.
    """
    with conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", [str(tenant_id)])
        if user_id is not None:
            conn.execute("SELECT set_config('app.user_id', %s, true)", [str(user_id)])
        yield conn


def scram_sha256_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores (RFC 5802/7677), computed here like psql's \\password.

    Sending the verifier instead of the password keeps the plain password out of the statement text, so
    it can never reach the server log or ``pg_stat_activity``.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def connection_url(user: str, password: str, host: str, port: int, dbname: str, sslmode: str) -> str:
    """A libpq URL; user, password and database are percent-encoded."""
    host_part = f"[{host}]" if ":" in host else host
    return (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host_part}:{port}/"
        f"{quote(dbname, safe='')}?sslmode={sslmode}"
    )


def ident(*names: str) -> sql.Identifier:
    return sql.Identifier(*names)
