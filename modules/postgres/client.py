"""Connections to a tier's PostgreSQL server (psycopg 3) and the helpers every caller shares.

Every connection goes through :func:`connect`, which turns a refused or failed connection into a typed
error whose message never carries a password. The admin target of a tier comes from the environment for
local tiers (``PENGUINMAILS_POSTGRES_*``, exported by devenv) and from the ``postgres`` stack config plus
the secret ``postgresAdminPassword`` for server tiers (see :func:`server_target`).
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

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def redact(self, text: str, *extra: str | None) -> str:
        return redact(text, self.password, *extra)

    def with_login(self, user: str, password: str | None) -> ServerTarget:
        return ServerTarget(self.host, self.port, user, password, self.sslmode, self.connect_timeout)


def server_target(settings: ProviderSettings, tier: str) -> ServerTarget:
    """The admin connection of ``tier``: environment first for a local tier, stack config for a server.

    A server tier never takes its address from the devenv variables, so a shell that sourced
    ``tools/env.sh`` cannot point a production stack at the local cluster. Its password is the secret
    ``postgresAdminPassword`` (one value, or a JSON object keyed by tier), or
    ``PENGUINMAILS_POSTGRES_<TIER>_ADMIN_PASSWORD`` when CI injects it.
    """
    section = settings.section("postgres")
    raw = section.get(tier) or {}
    cfg = PostgresTierConfig.model_validate(raw if isinstance(raw, dict) else {})
    secret = settings.get(SECRET_KEY)  # a JSON object arrives decoded
    if isinstance(secret, dict):
        secret = secret.get(tier)
    if cfg.mode == "local":
        return ServerTarget(
            host=os.environ.get(ENV_HOST) or cfg.host,
            port=int(os.environ.get(ENV_PORT) or cfg.port),
            user=os.environ.get(ENV_USER) or cfg.admin_user,
            password=os.environ.get(ENV_PASSWORD) or secret or None,
            sslmode=cfg.sslmode,
        )
    return ServerTarget(
        host=cfg.host,
        port=cfg.port,
        user=cfg.admin_user,
        password=os.environ.get(f"PENGUINMAILS_POSTGRES_{tier.upper()}_ADMIN_PASSWORD") or secret or None,
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
