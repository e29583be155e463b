"""Local PgBouncer 1.18 (Debian) in transaction mode in front of the devenv PostgreSQL, port 6433.

TLS on both sides from a devenv CA: clients must use TLS 1.3 (``client_tls_sslmode = require``), and
PgBouncer verifies PostgreSQL's certificate (``server_tls_sslmode = verify-full``) — this service also turns
on TLS in the devenv PostgreSQL with its own settings file in the server's ``penguinmails.conf.d`` (a reload,
no restart; clients with ``sslmode=prefer`` keep working).

No copied password file: logins are checked through ``auth_query`` against ``pgbouncer.user_lookup(text)``,
a SECURITY DEFINER function the stack installs in each tier database (:mod:`modules.postgres.pooler`), run as
the role ``pgbouncer_auth``. SCRAM verifiers from it let PgBouncer pass each client's SCRAM login through to
the server. The auth file holds only that role's password and the admin console's SCRAM verifier (0600).

Databases are in ``databases.ini`` (``%include``-d), written by the stack's ``PoolerDatabase`` resources and
applied with ``RELOAD`` on the admin console. After every transaction the server connection runs
``DISCARD ALL`` (``server_reset_query_always``), so a session-level ``SET`` of one client never reaches the
next client's transaction on that server connection.

PgBouncer refuses to run as root; it starts as root and switches to the ``postgres`` user (``-u``).
"""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path

from devenv.base import ProcessService, wait_until
from devenv.postgres import CONF_DIR, OS_USER, PostgresService
from modules.errors import DevenvError, ToolkitError

PGBOUNCER_PORT = 6433
AUTH_ROLE = "pgbouncer_auth"
ADMIN_USER = "pgbouncer_admin"
DATABASES_FILE = "databases.ini"
TLS_CONF = "pgbouncer-tls.conf"
AUTH_QUERY = "SELECT usename, passwd FROM pgbouncer.user_lookup($1)"


def _issued_by(cert_pem: str, ca_pem: str) -> bool:
    from cryptography import x509

    try:
        x509.load_pem_x509_certificate(cert_pem.encode()).verify_directly_issued_by(
            x509.load_pem_x509_certificate(ca_pem.encode())
        )
    except Exception:  # any failure (not signed by it, unreadable) means: issue a new one
        return False
    return True


def _owned_by_postgres(path: Path, mode: int) -> None:
    account = pwd.getpwnam(OS_USER)
    os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(mode)


class PgBouncerService(ProcessService):
    name = "pgbouncer"
    port = PGBOUNCER_PORT
    binary = "pgbouncer"
    package = "pgbouncer"

    def __init__(
        self,
        root: Path | None = None,
        port: int | None = None,
        postgres: PostgresService | None = None,
        reset_always: bool = True,
    ):
        """``postgres``: the cluster behind it (the shared one by default); ``reset_always=False`` only for
        the test that proves what ``DISCARD ALL`` after every transaction prevents."""
        super().__init__(root, port)
        self.postgres = postgres or PostgresService()
        self.reset_always = reset_always

    # ------------------------------------------------------------------------------------------- files

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def databases_file(self) -> Path:
        return self.dir / DATABASES_FILE

    @property
    def ini_file(self) -> Path:
        return self.dir / "pgbouncer.ini"

    def _ensure_ca(self) -> tuple[str, str]:
        """The CA of the PostgreSQL cluster behind (kept in its service folder, so every pooler in front of
        it, the shared one and a test's private one, verifies the same server certificate); a copy of the
        certificate goes beside the pooler's config for it and its clients."""
        from modules.secrets.tls import CaSpec, make_ca

        cert_file, key_file = self.postgres.dir / "pgbouncer-ca.crt", self.postgres.dir / "pgbouncer-ca.key"
        if not (cert_file.exists() and key_file.exists()):
            cert, key = make_ca(CaSpec("penguinmails devenv pgbouncer CA"))
            key_file.write_text(key)
            key_file.chmod(0o600)
            cert_file.write_text(cert)
        self.ca_file.write_text(cert_file.read_text())
        self.ca_file.chmod(0o644)
        return cert_file.read_text(), key_file.read_text()

    def auth_password(self) -> str:
        """The auth role's password: one per cluster (every pooler in front of it logs in as that role)."""
        return self.postgres.secret("pgbouncer-auth.password")

    def _issue(self, folder: Path, ca: tuple[str, str]) -> tuple[Path, Path, bool]:
        """server.crt and server.key (0600, the postgres user's) for 127.0.0.1 and localhost, kept once made."""
        from modules.secrets.tls import ServerCertSpec, issue

        folder.mkdir(mode=0o700, exist_ok=True)
        cert_file, key_file = folder / "server.crt", folder / "server.key"
        if not (cert_file.exists() and key_file.exists() and _issued_by(cert_file.read_text(), ca[0])):
            cert, key = issue(ServerCertSpec(("localhost",), ("127.0.0.1",)), *ca)
            key_file.write_text(key)
            cert_file.write_text(cert)
            issued = True
        else:
            issued = False
        for path, mode in ((folder, 0o700), (cert_file, 0o644), (key_file, 0o600)):
            _owned_by_postgres(path, mode)
        return cert_file, key_file, issued

    def _postgres_tls(self, ca: tuple[str, str]) -> None:
        """TLS 1.3 on the devenv PostgreSQL, with a certificate of this CA (PgBouncer verifies it)."""
        if not self.postgres.running():
            raise DevenvError(
                f"pgbouncer: PostgreSQL on {self.postgres.address} is not running; start it first "
                "(python -m devenv start postgres)"
            )
        cert_file, key_file, issued = self._issue(self.postgres.server_dir / "tls-pgbouncer", ca)
        conf = self.postgres.data_dir / CONF_DIR / TLS_CONF
        text = (
            "# Managed by devenv/pgbouncer.py: PgBouncer verifies this certificate (server_tls_sslmode).\n"
            "ssl = on\n"
            f"ssl_cert_file = '{cert_file}'\n"
            f"ssl_key_file = '{key_file}'\n"
            "ssl_min_protocol_version = 'TLSv1.3'\n"
        )
        with self._admin() as conn:
            if issued or not conf.exists() or conf.read_text() != text:
                conf.write_text(text)
                _owned_by_postgres(conf, 0o600)
                conn.execute("SELECT pg_reload_conf()")
            wait_until(
                lambda: conn.execute("SHOW ssl").fetchone()[0] == "on",
                "PostgreSQL to turn on TLS",
                timeout=20,
            )

    def _admin(self):
        return self.postgres.admin_connection("devenv-pgbouncer")

    def _auth_role(self) -> None:
        """The role PgBouncer runs ``auth_query`` as: LOGIN and nothing else (no superuser, no RLS bypass);
        the stack grants it CONNECT and EXECUTE on the lookup function in each tier database. PgBouncer keeps
        one connection of it per pooled database, hence the limit of 64 (tests pool many at once)."""
        from psycopg import sql

        from modules.postgres.client import scram_sha256_verifier

        verifier = scram_sha256_verifier(self.auth_password())
        with self._admin() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [AUTH_ROLE]).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(
                    "{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                    "CONNECTION LIMIT 64 PASSWORD {}"
                ).format(sql.SQL(verb), sql.Identifier(AUTH_ROLE), sql.Literal(verifier))
            )

    def prepare(self) -> None:
        from modules.postgres.client import scram_sha256_verifier

        if self.dir.parent.stat().st_mode & 0o001 == 0:  # a private root from mkdtemp: let postgres walk in
            self.dir.parent.chmod(self.dir.parent.stat().st_mode | 0o011)
        self.dir.chmod(0o755)
        ca = self._ensure_ca()
        self._postgres_tls(ca)
        self._auth_role()
        cert_file, key_file, _ = self._issue(self.dir / "tls", ca)
        # Passwords only in this 0600 file: the auth role's (PgBouncer logs in with it) and the console's verifier.
        auth_file = self.dir / "userlist.txt"
        auth_file.write_text(
            f'"{AUTH_ROLE}" "{self.auth_password()}"\n'
            f'"{ADMIN_USER}" "{scram_sha256_verifier(self.secret("admin.password"))}"\n'
        )
        _owned_by_postgres(auth_file, 0o600)
        if not self.databases_file.exists():
            self.databases_file.write_text("; PoolerDatabase entries (modules/postgres/pooler.py)\n")
        _owned_by_postgres(self.databases_file, 0o644)
        settings = {
            "listen_addr": self.host,
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "pool_mode": "transaction",
            "auth_type": "scram-sha-256",
            "auth_file": str(auth_file),
            "auth_user": AUTH_ROLE,
            "auth_query": AUTH_QUERY,
            "admin_users": ADMIN_USER,
            "stats_users": ADMIN_USER,
            "server_reset_query": "DISCARD ALL",
            "server_reset_query_always": "1" if self.reset_always else "0",
            "max_client_conn": "2000",
            "default_pool_size": "20",
            "reserve_pool_size": "0",
            "server_lifetime": "3600",
            "server_idle_timeout": "120",  # idle server connections (and auth_query ones) go back soon
            "query_wait_timeout": "60",
            "client_tls_sslmode": "require",
            "client_tls_protocols": "tlsv1.3",
            "client_tls_cert_file": str(cert_file),
            "client_tls_key_file": str(key_file),
            "client_tls_ca_file": str(self.ca_file),
            "server_tls_sslmode": "verify-full",
            "server_tls_protocols": "tlsv1.3",
            "server_tls_ca_file": str(self.ca_file),
            "application_name_add_host": "0",
            "log_connections": "0",
            "log_disconnections": "0",
        }
        self.ini_file.write_text(
            "; Managed by devenv/pgbouncer.py\n[databases]\n"
            f"%include {self.databases_file}\n\n[pgbouncer]\n"
            + "".join(f"{key} = {value}\n" for key, value in settings.items())
        )
        _owned_by_postgres(self.ini_file, 0o600)

    def command(self) -> list[str]:
        return ["-u", OS_USER, str(self.ini_file)]

    def start(self):
        status = super().start()
        # The console answers once the listener is up; wait for it so RELOAD right after start works.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.console().close()
                break
            except ToolkitError:
                time.sleep(0.2)
        return status

    def console(self):
        """A connection to the admin console (virtual database ``pgbouncer``; simple protocol only)."""
        from modules.postgres.pooler import PoolerTarget, console

        return console(
            PoolerTarget(self.host, self.port, ADMIN_USER, self.secret("admin.password"), self.ca_file)
        )

    def env(self) -> dict[str, str]:
        return {
            "PENGUINMAILS_PGBOUNCER_HOST": self.host,
            "PENGUINMAILS_PGBOUNCER_PORT": str(self.port),
            "PENGUINMAILS_PGBOUNCER_ADMIN_USER": ADMIN_USER,
            "PENGUINMAILS_PGBOUNCER_ADMIN_PASSWORD": self.secret("admin.password"),
            "PENGUINMAILS_PGBOUNCER_AUTH_USER": AUTH_ROLE,
            "PENGUINMAILS_PGBOUNCER_CA_FILE": str(self.ca_file),
            "PENGUINMAILS_PGBOUNCER_DATABASES_FILE": str(self.databases_file),
        }
