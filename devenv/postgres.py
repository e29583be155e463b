"""Local PostgreSQL 15 for the four tiers: one cluster of the project's own, loopback only, port 5433.

The cluster runs as the ``postgres`` OS user (PostgreSQL refuses to run as root) from Debian's binaries, with
its data in ``.devenv/postgres/data``. There is no Unix socket: the toolkit connects over TCP as the admin
role ``postgres`` with a SCRAM password made once and kept in ``.devenv/postgres/admin.password``. The
machine's default cluster (port 5432) is neither needed nor touched.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from devenv.base import Service, pid_alive, wait_until
from modules.errors import DevenvError

POSTGRES_PORT = 5433
# Settings files of other devenv services, read after penguinmails.conf (see _write_config).
CONF_DIR = "penguinmails.conf.d"
PG_BIN = Path(os.environ.get("PENGUINMAILS_PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"
ADMIN_USER = "postgres"
# Where the server's files go when the postgres user cannot walk down to the checkout (a clone in a private
# 0700 folder, as `mktemp -d` makes them): that user's own home, one folder per service folder.
RELOCATED_ROOT = Path(
    os.environ.get("PENGUINMAILS_PG_RELOCATED_ROOT", "/var/lib/postgresql/penguinmails-devenv")
)

# Sized for a shared 2-core machine that also runs the benchmark's few-million-row seed.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "max_connections": "200",
    "shared_buffers": "'512MB'",
    "work_mem": "'16MB'",
    "maintenance_work_mem": "'256MB'",
    "effective_cache_size": "'4GB'",
    "max_wal_size": "'4GB'",
    "checkpoint_timeout": "'15min'",
    "password_encryption": "'scram-sha-256'",
    "default_toast_compression": "'lz4'",
    "log_min_duration_statement": "'2s'",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
    "idle_in_transaction_session_timeout": "'10min'",
    "max_locks_per_transaction": "256",
    # Session default only: the schema's partition boundaries are computed in UTC whatever a session says.
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
}
# pg_cron runs each tier's partition maintenance (modules/postgres/schedule.py). Jobs run in background
# workers, so no job needs a password or a socket (there is none); pg_cron 1.4 reads schedules in GMT.
PG_CRON_SETTINGS = {
    "shared_preload_libraries": "'pg_cron'",
    "cron.database_name": "'postgres'",
    "cron.use_background_workers": "on",
    "cron.max_running_jobs": "8",
    "max_worker_processes": "24",
}


def pg_cron_installed() -> bool:
    """Debian's postgresql-15-cron (tools/bootstrap.sh installs it); without it the server would not start."""
    return (PG_BIN.parent / "lib" / "pg_cron.so").exists()


class PostgresService(Service):
    name = "postgres"
    port = POSTGRES_PORT

    @property
    def server_dir(self) -> Path:
        """The folder of the server's own files (data, log): the service folder when the postgres user can
        reach it, else a folder under :data:`RELOCATED_ROOT` keyed by the service folder's path. Folders of
        the checkout are never opened up to other users for it."""
        if self._reachable():
            return self.dir
        key = hashlib.sha256(str(self.dir.resolve()).encode()).hexdigest()[:16]
        return RELOCATED_ROOT / key

    def _reachable(self) -> bool:
        # self.dir and .devenv are ours to open (o+x); any folder above them must already be searchable.
        return all(folder.stat().st_mode & 0o001 for folder in self.dir.resolve().parents[1:])

    @property
    def data_dir(self) -> Path:
        return self.server_dir / "data"

    def discard(self) -> None:
        """Remove the server's files when they were relocated out of the service folder (``make clean``)."""
        if self.server_dir != self.dir:
            shutil.rmtree(self.server_dir, ignore_errors=True)

    @property
    def pid_file(self) -> Path:
        # The postmaster writes its own pid file; its first line is the pid.
        return self.data_dir / "postmaster.pid"

    def pid(self) -> int | None:
        try:
            first = self.pid_file.read_text().splitlines()[0]
            pid = int(first.strip())
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def _run_as_postgres(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = ["runuser", "-u", OS_USER, "--", *args]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, cwd="/", check=False
            )
        except subprocess.TimeoutExpired:
            raise DevenvError(f"postgres: {args[0]} did not finish within {timeout:.0f} s") from None
        if result.returncode != 0:
            output = (result.stderr or result.stdout).strip()[-2000:]
            raise DevenvError(f"postgres: {Path(args[0]).name} failed (exit {result.returncode}): {output}")
        return result

    def _check_prerequisites(self) -> pwd.struct_passwd:
        if not (PG_BIN / "postgres").exists():
            raise DevenvError(f"PostgreSQL 15 is not installed in {PG_BIN} (run `make bootstrap`)")
        if shutil.which("runuser") is None:
            raise DevenvError("runuser is missing (util-linux); it starts the server as the postgres user")
        try:
            account = pwd.getpwnam(OS_USER)
        except KeyError:
            raise DevenvError("the postgres OS user does not exist (install postgresql-15)") from None
        # The server user must be able to walk down to its data directory.
        if self.server_dir == self.dir:
            for folder in (self.dir, self.dir.parent):
                if not folder.stat().st_mode & 0o001:
                    folder.chmod(folder.stat().st_mode | 0o011)
        else:
            RELOCATED_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
            self.server_dir.mkdir(mode=0o700, exist_ok=True)
            os.chown(self.server_dir, account.pw_uid, account.pw_gid)
            (self.dir / "relocated-to").write_text(f"{self.server_dir}\n")
        return account

    def _initdb(self, account: pwd.struct_passwd, password: str) -> None:
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.data_dir, account.pw_uid, account.pw_gid)
        pwfile = self.server_dir / ".initdb-pw"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        os.chown(pwfile, account.pw_uid, account.pw_gid)
        try:
            self._run_as_postgres(
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data_dir),
                "--username",
                ADMIN_USER,
                f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _write_config(self, account: pwd.struct_passwd) -> None:
        conf = self.data_dir / "postgresql.conf"
        include = "include_if_exists = 'penguinmails.conf'"
        text = conf.read_text()
        if include not in text:
            conf.write_text(text.rstrip("\n") + f"\n\n# Managed by devenv/postgres.py\n{include}\n")
        settings = {**SETTINGS, **(PG_CRON_SETTINGS if pg_cron_installed() else {}), "port": str(self.port)}
        ours = self.data_dir / "penguinmails.conf"
        # Other devenv services (TLS, WAL archiving) drop their own files in CONF_DIR; the server reads
        # them after these settings, so none of them rewrites another's.
        conf_dir = self.data_dir / CONF_DIR
        conf_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(conf_dir, account.pw_uid, account.pw_gid)
        ours.write_text(
            "".join(f"{key} = {value}\n" for key, value in settings.items()) + f"include_dir = '{CONF_DIR}'\n"
        )
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(
            "# Managed by devenv/postgres.py: TCP on loopback only, SCRAM passwords for every role.\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        for path in (ours, hba):
            path.chmod(0o600)
            os.chown(path, account.pw_uid, account.pw_gid)

    def _start(self) -> None:
        account = self._check_prerequisites()
        password = self.secret("admin.password")
        if not (self.data_dir / "PG_VERSION").exists():
            if self.data_dir.exists() and any(self.data_dir.iterdir()):
                raise DevenvError(
                    f"{self.data_dir} is not empty but holds no cluster; remove it to start over"
                )
            self._initdb(account, password)
        self._write_config(account)
        log = self.server_dir / "postgres.log"
        log.touch(exist_ok=True)
        os.chown(log, account.pw_uid, account.pw_gid)
        # A stale pid file from a killed server would make pg_ctl refuse to start.
        if self.pid_file.exists() and self.pid() is None:
            self.pid_file.unlink()
        self._run_as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-l", str(log), "-w", "-t", "60", "start"
        )

    def stop(self):
        pid = self.pid()
        if pid is not None:
            # Fast shutdown: connected clients are disconnected instead of waited for.
            self._run_as_postgres(
                str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"
            )
            wait_until(lambda: not pid_alive(pid), f"postgres (pid {pid}) to stop", timeout=30)
        return self.status()

    def admin_connection(self, application_name: str = "devenv", dbname: str = "postgres"):
        """An autocommit psycopg connection as the admin role (other devenv services set up their part)."""
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=ADMIN_USER,
            password=self.secret("admin.password"),
            dbname=dbname,
            autocommit=True,
            application_name=application_name,
            connect_timeout=10,
        )

    def env(self) -> dict[str, str]:
        return {
            "PENGUINMAILS_POSTGRES_HOST": self.host,
            "PENGUINMAILS_POSTGRES_PORT": str(self.port),
            "PENGUINMAILS_POSTGRES_ADMIN_USER": ADMIN_USER,
            "PENGUINMAILS_POSTGRES_ADMIN_PASSWORD": self.secret("admin.password"),
        }
