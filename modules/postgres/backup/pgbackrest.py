"""pgBackRest (Debian, 2.45) for one cluster: its config, WAL archiving, and the commands we run.

pgBackRest runs as the ``postgres`` OS user, which owns the data files; its files live beside the data
directory in ``<server dir>/pgbackrest/`` (0700, owned by postgres): ``<stanza>.conf`` (0600: it holds the
S3 keys and the cipher pass, so they are never on a command line), a copy of the CA, a ``pgpass`` file for
the connection it opens over TCP (the devenv cluster has no Unix socket), and its lock and log folders.

One stanza per cluster: tiers sharing a cluster share it, and its retention is the longest of theirs. The
archive command goes into ``<data>/penguinmails.conf.d/pgbackrest.conf``; ``archive_mode = on`` needs one
restart of the server, which :func:`enable_archiving` does only when told to (the devenv, a test).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modules.config.backup import BackupConfig
from modules.errors import ToolkitError
from modules.postgres.client import ServerTarget, connect
from modules.providers import ProviderSettings, redact

PGBACKREST = os.environ.get("PENGUINMAILS_PGBACKREST", "/usr/bin/pgbackrest")
OS_USER = "postgres"
CONF_DIR = "penguinmails.conf.d"  # as devenv/postgres.py
ARCHIVE_CONF = "pgbackrest.conf"
ENV_ENDPOINT = "PENGUINMAILS_S3_ENDPOINT"
ENV_BUCKET = "PENGUINMAILS_S3_BUCKET"
ENV_REGION = "PENGUINMAILS_S3_REGION"
ENV_CA_FILE = "PENGUINMAILS_S3_CA_FILE"
ENV_ACCESS_KEY = "PENGUINMAILS_S3_ACCESS_KEY"
ENV_SECRET_KEY = "PENGUINMAILS_S3_SECRET_KEY"  # noqa: S105 - a variable name
ENV_CIPHER_PASS = "PENGUINMAILS_BACKUP_CIPHER_PASS"  # noqa: S105 - a variable name


class BackupError(ToolkitError):
    """pgBackRest or the repository refused: the message names the stanza and the next step."""


@dataclass(frozen=True)
class Repo:
    """Where the repository is and how to open it; the secrets never show in ``repr``."""

    host: str
    port: int
    bucket: str
    region: str
    uri_style: str
    verify_tls: bool
    ca_file: str | None
    path: str
    process_max: int
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    cipher_pass: str = field(repr=False)

    def redact(self, text: str) -> str:
        return redact(text, self.access_key, self.secret_key, self.cipher_pass)


def backup_config(settings: ProviderSettings) -> BackupConfig:
    raw = settings.section("postgres").get("backup") or {}
    return BackupConfig.model_validate(raw if isinstance(raw, dict) else {})


def repo_from_settings(settings: ProviderSettings, stanza: str, config: BackupConfig | None = None) -> Repo:
    """The repository of ``stanza`` (``<repo_path>/<stanza>``): config (dev: the devenv's s3 variables
    first) and secret config."""
    config = config or backup_config(settings)
    endpoint = settings.endpoint(ENV_ENDPOINT, config.endpoint)
    bucket = settings.endpoint(ENV_BUCKET, config.bucket)
    missing = [name for name, value in (("endpoint", endpoint), ("bucket", bucket)) if not value]
    secrets = {
        "backupS3AccessKey": settings.credential(ENV_ACCESS_KEY, "backupS3AccessKey"),
        "backupS3SecretKey": settings.credential(ENV_SECRET_KEY, "backupS3SecretKey"),
        "backupCipherPass": settings.credential(ENV_CIPHER_PASS, "backupCipherPass"),
    }
    if missing:
        raise BackupError(
            f"postgres.backup.{missing[0]} is not set (a dev stack: start the devenv's s3 service; "
            "otherwise set it in the stack config)"
        )
    unset = [key for key, value in secrets.items() if not value]
    if unset:
        raise BackupError(f"secret {unset[0]} is not set: `pulumi config set --secret {unset[0]} …`")
    parts = urlsplit(str(endpoint))
    if parts.scheme != "https" or not parts.hostname:
        raise BackupError(f"postgres.backup.endpoint must be https://host[:port], got {endpoint!r}")
    return Repo(
        host=parts.hostname,
        port=parts.port or 443,
        bucket=str(bucket),
        region=str(settings.endpoint(ENV_REGION, config.region)),
        uri_style=config.uri_style,
        verify_tls=config.verify_tls,
        ca_file=settings.endpoint(ENV_CA_FILE, config.ca_file),
        path=f"{config.repo_path.rstrip('/')}/{stanza}",
        process_max=config.process_max,
        access_key=str(secrets["backupS3AccessKey"]),
        secret_key=str(secrets["backupS3SecretKey"]),
        cipher_pass=str(secrets["backupCipherPass"]),
    )


@dataclass(frozen=True)
class Cluster:
    """A PostgreSQL cluster on this machine, as pgBackRest sees it, and its admin login."""

    stanza: str
    data_dir: Path
    port: int
    user: str = "postgres"
    password: str | None = field(default=None, repr=False)
    host: str = "127.0.0.1"

    @property
    def work_dir(self) -> Path:
        return self.data_dir.parent / "pgbackrest"

    @property
    def config_file(self) -> Path:
        return self.work_dir / f"{self.stanza}.conf"

    @property
    def archive_conf(self) -> Path:
        return self.data_dir / CONF_DIR / ARCHIVE_CONF

    def target(self) -> ServerTarget:
        return ServerTarget(self.host, self.port, self.user, self.password)


def cluster_of(target: ServerTarget, stanza: str) -> Cluster:
    """The cluster behind ``target`` (it must run on this machine: pgBackRest reads its files)."""
    with connect(target, application_name="penguinmails-backup") as conn:
        data_dir = conn.execute("SHOW data_directory").fetchone()[0]
        port = int(conn.execute("SHOW port").fetchone()[0])
    return Cluster(stanza, Path(data_dir), port, target.user, target.password, target.host)


def render_config(cluster: Cluster, repo: Repo, retention_days: int) -> str:
    """The stanza's pgbackrest.conf (0600: S3 keys and the cipher pass are in it)."""
    work = cluster.work_dir
    lines = [
        "# Managed by modules/postgres/backup/pgbackrest.py",
        "[global]",
        "repo1-type=s3",
        f"repo1-path={repo.path}",
        f"repo1-s3-bucket={repo.bucket}",
        f"repo1-s3-endpoint={repo.host}",
        f"repo1-storage-port={repo.port}",
        f"repo1-s3-region={repo.region}",
        f"repo1-s3-uri-style={repo.uri_style}",
        f"repo1-s3-key={repo.access_key}",
        f"repo1-s3-key-secret={repo.secret_key}",
        f"repo1-storage-verify-tls={'y' if repo.verify_tls else 'n'}",
        "repo1-cipher-type=aes-256-cbc",
        f"repo1-cipher-pass={repo.cipher_pass}",
        # Tiers sharing this cluster share the stanza: retention is the longest of theirs.
        "repo1-retention-full-type=time",
        f"repo1-retention-full={retention_days}",
        f"process-max={repo.process_max}",
        "start-fast=y",
        # Small files go into bundles: far fewer S3 requests per backup.
        "repo1-bundle=y",
        "io-timeout=30",
        "compress-type=lz4",
        f"lock-path={work / 'lock'}",
        f"log-path={work / 'log'}",
        f"spool-path={work / 'spool'}",
        "log-level-console=warn",
        "log-level-file=info",
        "",
        f"[{cluster.stanza}]",
        f"pg1-path={cluster.data_dir}",
        f"pg1-port={cluster.port}",
        f"pg1-user={cluster.user}",
        "",
    ]
    if repo.ca_file:
        lines.insert(lines.index("repo1-cipher-type=aes-256-cbc"), f"repo1-storage-ca-file={work / 'ca.pem'}")
    return "\n".join(lines)


def archive_settings(cluster: Cluster) -> str:
    command = f"{PGBACKREST} --config={cluster.config_file} --stanza={cluster.stanza} archive-push %p"
    return f"# Managed by modules/postgres/backup/pgbackrest.py\narchive_mode = on\narchive_command = '{command}'\n"


def _owned(path: Path, text: str | bytes, account: pwd.struct_passwd, mode: int = 0o600) -> None:
    # Created with the mode already set, so a secret is never readable by others even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(text.encode() if isinstance(text, str) else text)
    os.chmod(path, mode)
    os.chown(path, account.pw_uid, account.pw_gid)


def install(cluster: Cluster, repo: Repo, retention_days: int) -> None:
    """Write the stanza's config, CA copy, pgpass and the archive settings; reload the server."""
    account = pwd.getpwnam(OS_USER)
    for folder in (
        cluster.work_dir,
        cluster.work_dir / "lock",
        cluster.work_dir / "log",
        cluster.work_dir / "spool",
    ):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(folder, account.pw_uid, account.pw_gid)
    if repo.ca_file:
        try:
            ca = Path(repo.ca_file).read_bytes()
        except OSError as exc:
            raise BackupError(
                f"postgres.backup.ca_file {repo.ca_file}: cannot read it ({exc.strerror})"
            ) from None
        _owned(cluster.work_dir / "ca.pem", ca, account, 0o644)
    _owned(cluster.config_file, render_config(cluster, repo, retention_days), account)
    _owned(
        cluster.work_dir / "pgpass",
        f"{cluster.host}:{cluster.port}:*:{cluster.user}:{cluster.password or ''}\n",
        account,
    )
    conf_dir = cluster.data_dir / CONF_DIR
    conf_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(conf_dir, account.pw_uid, account.pw_gid)
    _owned(cluster.archive_conf, archive_settings(cluster), account)
    with connect(cluster.target(), application_name="penguinmails-backup") as conn:
        conn.execute("SELECT pg_reload_conf()")


def archive_mode_on(cluster: Cluster) -> bool:
    with connect(cluster.target(), application_name="penguinmails-backup") as conn:
        return conn.execute("SHOW archive_mode").fetchone()[0] == "on"


def run(
    cluster: Cluster, *args: str, timeout: float = 3600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``pgbackrest --config --stanza ARGS`` as postgres; the login comes from the pgpass file."""
    command = [
        shutil.which("runuser") or "/usr/sbin/runuser", "-u", OS_USER, "--", PGBACKREST,
        f"--config={cluster.config_file}", f"--stanza={cluster.stanza}", *args,
    ]  # fmt: skip
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "PGHOST": cluster.host,
        "PGPASSFILE": str(cluster.work_dir / "pgpass"),
    }
    if not Path(PGBACKREST).exists():
        raise BackupError(
            f"pgBackRest is not installed ({PGBACKREST}); run `make bootstrap` (Debian pgbackrest)"
        )
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, cwd="/", check=False
        )
    except subprocess.TimeoutExpired:
        raise BackupError(
            f"stanza {cluster.stanza}: pgbackrest {args[0]} did not finish within {timeout:.0f} s"
        ) from None
    if check and result.returncode != 0:
        raise BackupError(f"stanza {cluster.stanza}: pgbackrest {args[0]} failed: {error_text(result)}")
    return result


def error_text(result: subprocess.CompletedProcess[str]) -> str:
    """The ERROR lines pgBackRest printed (the last few), else the end of its output."""
    text = (result.stderr or "") + (result.stdout or "")
    errors = [line.split("ERROR:", 1)[1].strip() for line in text.splitlines() if "ERROR:" in line]
    return " | ".join(errors[-2:]) if errors else text.strip()[-500:] or f"exit {result.returncode}"


def info(cluster: Cluster) -> dict[str, Any] | None:
    """The stanza's ``info --output=json`` entry, or None when the repository has no such stanza."""
    result = run(cluster, "info", "--output=json", timeout=120)
    try:
        entries = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        raise BackupError(f"stanza {cluster.stanza}: pgbackrest info printed no JSON") from None
    entry = next((e for e in entries if e.get("name") == cluster.stanza), None)
    if entry is None or entry.get("status", {}).get("code") == 1:  # 1: missing stanza path
        return None
    return entry


def last_backup(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    """The newest complete backup of an ``info`` entry (pgBackRest lists only complete ones)."""
    backups = (entry or {}).get("backup") or []
    good = [b for b in backups if not b.get("error")]
    return good[-1] if good else None


def enable_archiving(cluster: Cluster, restart) -> bool:
    """Make ``archive_mode`` on: call ``restart()`` (devenv, tests) once when the setting waits for it.
    Returns True when a restart was made."""
    if archive_mode_on(cluster):
        return False
    restart()
    return True


def remove(cluster: Cluster) -> None:
    """Forget the stanza's local files and the archive settings (the repository is left as it is)."""
    cluster.archive_conf.unlink(missing_ok=True)
    shutil.rmtree(cluster.work_dir / "spool", ignore_errors=True)
    cluster.config_file.unlink(missing_ok=True)


def record_result(cluster: Cluster, ok: bool, message: str = "") -> None:
    """What the last ``penguinmails db backup`` did (the exporter's penguinmails_backup_last_ok)."""
    import time

    path = cluster.work_dir / f"{cluster.stanza}.last-backup.json"
    path.write_text(json.dumps({"ok": ok, "time": time.time(), "message": message[:500]}))


def read_result(cluster: Cluster) -> dict[str, Any] | None:
    try:
        return json.loads((cluster.work_dir / f"{cluster.stanza}.last-backup.json").read_text())
    except (OSError, ValueError):
        return None
