"""An S3-compatible endpoint on loopback (moto's server mode) with TLS, for pgBackRest's repositories.

pgBackRest speaks only HTTPS to S3, so the service makes a dev-only CA and a server certificate for
``localhost``/127.0.0.1 (once) and runs ``moto_server --ssl-cert/--ssl-key``. moto keeps its state in memory:
a restart loses the bucket and every backup in it. The bucket is created again on start, and the
``BackupStanza`` resource's read notices the missing stanza, so the next ``up`` makes a new one.

The access key and secret are dev-only values (moto accepts any); the repository cipher pass is a devenv
secret (0600). A production stack sets all three as secret config (see modules/config/backup.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from devenv.base import REPO_ROOT, ProcessService, ServiceStatus
from devenv.tls import ensure_server_files
from modules.errors import DevenvError

S3_PORT = 9397
BUCKET = "penguinmails-backups"
REGION = "us-east-1"
ACCESS_KEY = "penguinmails-dev"  # moto accepts any key; dev-only


class S3Service(ProcessService):
    name = "s3"
    port = S3_PORT
    binary = "python"
    package = "(PyPI moto[server], this project's dev extras: make bootstrap)"

    def __init__(self, root: Path | None = None, port: int | None = None, host: str | None = None):
        # ``host``: a private instance on another address (tests: the podman gateway, so fleet hosts reach
        # it); the certificate then names that address too. The shared service stays on loopback.
        super().__init__(root, port)
        if host is not None:
            self.host = host

    @property
    def cert_file(self) -> Path:
        return self.dir / "https.pem"

    @property
    def key_file(self) -> Path:
        return self.dir / "https.key"

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def endpoint(self) -> str:
        # localhost, not the IP: the certificate names both, and pgBackRest checks host names.
        if self.host != "127.0.0.1":
            return f"https://{self.host}:{self.port}"
        return f"https://localhost:{self.port}"

    def executable(self) -> str:
        # The project's own interpreter: moto is one of its (dev) packages; see devenv/s3_server.py.
        for candidate in (REPO_ROOT / ".venv" / "bin" / "python", Path(sys.executable)):
            if candidate.exists():
                return str(candidate)
        return super().executable()

    def process_env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(REPO_ROOT)}

    def prepare(self) -> None:
        self._ensure_certificate()

    def command(self) -> list[str]:
        return [
            "-m",
            "devenv.s3_server",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--ssl-cert",
            str(self.cert_file),
            "--ssl-key",
            str(self.key_file),
        ]

    def _ensure_certificate(self) -> None:
        """A dev-only CA and the server certificate for localhost and 127.0.0.1 (made once). On another
        address the certificate names it too, as an IP and as a DNS name: pgBackRest 2.45 matches the
        endpoint against DNS names only."""
        others = () if self.host == "127.0.0.1" else (self.host,)
        ensure_server_files(
            ca_name="penguinmails devenv s3 CA",
            cert_file=self.cert_file,
            key_file=self.key_file,
            ca_file=self.ca_file,
            dns_names=("localhost", *others),
            ip_addresses=("127.0.0.1", *others),
        )

    def client(self):
        """A boto3 S3 client for this endpoint (tests and the bucket check)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=self.secret("secret.key"),
            verify=str(self.ca_file),
        )

    def ensure_bucket(self) -> None:
        """The backup bucket; after a restart of moto (state in memory) it is made again, empty."""
        try:
            client = self.client()
            names = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
            if BUCKET not in names:
                client.create_bucket(Bucket=BUCKET)
        except Exception as exc:  # botocore raises many kinds; the message is what matters here
            raise DevenvError(f"s3: cannot create bucket {BUCKET} on {self.endpoint}: {exc}") from None

    def start(self) -> ServiceStatus:
        status = super().start()
        self.ensure_bucket()
        self.enable_archiving()
        return status

    def enable_archiving(self) -> None:
        """Turn on WAL archiving of the devenv cluster beside this service (one restart, the first time).

        Until a stack's BackupStanza writes its real archive command, ``/bin/true`` stands in: nothing is
        kept, so WAL does not pile up; the stanza's first full backup starts the recoverable history.
        """
        import pwd

        from devenv.postgres import CONF_DIR, OS_USER, PostgresService

        postgres = PostgresService(root=self.dir.parent)
        if not postgres.running():
            return
        conf = postgres.data_dir / CONF_DIR / "pgbackrest.conf"
        if not conf.exists():
            account = pwd.getpwnam(OS_USER)
            conf.write_text("# devenv/s3.py: until a stack's BackupStanza sets its own\narchive_mode = on\n"
                            "archive_command = '/bin/true'\n")  # fmt: skip
            conf.chmod(0o600)
            os.chown(conf, account.pw_uid, account.pw_gid)
        with postgres.admin_connection("devenv-s3") as conn:
            on = conn.execute("SHOW archive_mode").fetchone()[0] == "on"
        if not on:
            postgres.stop()
            postgres.start()

    def env(self) -> dict[str, str]:
        fleet = {}
        if self.host != "127.0.0.1":
            # Reachable from podman hosts: where a dev stack's fleet tiers (their own VPS) back up to.
            fleet = {
                "PENGUINMAILS_FLEET_S3_ENDPOINT": self.endpoint,
                "PENGUINMAILS_FLEET_S3_CA_FILE": str(self.ca_file),
            }
        return {
            **fleet,
            "PENGUINMAILS_S3_ENDPOINT": self.endpoint,
            "PENGUINMAILS_S3_BUCKET": BUCKET,
            "PENGUINMAILS_S3_REGION": REGION,
            "PENGUINMAILS_S3_CA_FILE": str(self.ca_file),
            "PENGUINMAILS_S3_ACCESS_KEY": ACCESS_KEY,
            "PENGUINMAILS_S3_SECRET_KEY": self.secret("secret.key"),
            "PENGUINMAILS_BACKUP_CIPHER_PASS": self.secret("cipher.pass", 48),
        }
