"""The local Hostwinds Cloud API (the simulator in ``devenv/hostwinds_sim``) as a devenv service.

The dev stack uses the ``podman`` backend: its instances are real containers that Ansible reaches over
SSH. Tests and benchmarks start private instances with the ``memory`` backend on another port. The
service makes, once, the simulator's API key and an "operator" SSH key pair that it registers on the
simulated account as ``penguinmails-dev-operator`` (as if uploaded in the portal); the dev stack's fleet
puts that key on every node and Ansible logs in with the private half
(``PENGUINMAILS_FLEET_SSH_PRIVATE_KEY``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from devenv.base import REPO_ROOT, Service, ServiceStatus, pid_alive, wait_until
from modules.errors import DevenvError

HOSTWINDS_PORT = 8930
OPERATOR_KEY_NAME = "penguinmails-dev-operator"
BACKENDS = ("memory", "podman")


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _alive(pid: int) -> bool:
    return pid_alive(pid) and not _is_zombie(pid)


class HostwindsService(Service):
    name = "hostwinds"
    port = HOSTWINDS_PORT

    def __init__(
        self,
        root: Path | None = None,
        port: int | None = None,
        backend: str | None = None,
        build_seconds: float | None = None,
        delete_seconds: float = 0.5,
        podman_prefix: str = "pm-vps",
        persist: bool = True,
        faults: str | None = None,
        processing_seconds: float = 0.0,
    ):
        super().__init__(root, port)
        self.backend = backend or os.environ.get("PENGUINMAILS_HOSTWINDS_BACKEND", "podman")
        self.build_seconds = build_seconds
        if build_seconds is None:
            try:
                self.build_seconds = float(os.environ.get("PENGUINMAILS_HOSTWINDS_BUILD_SECONDS", "3"))
            except ValueError:
                self.build_seconds = -1.0  # refused by _start with the variable's name
        self.delete_seconds = delete_seconds
        self.podman_prefix = podman_prefix
        self.persist = persist
        self.faults = faults
        self.processing_seconds = processing_seconds

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/cloud/api.php"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.port}/_sim"

    @property
    def state_file(self) -> Path:
        return self.dir / f"state-{self.backend}.json"

    def api_key(self) -> str:
        return self.secret("api.key")

    def operator_key(self) -> tuple[Path, Path]:
        """(private, public) paths of the dev operator key, made once with mode 0600."""
        private, public = self.dir / "operator_ed25519", self.dir / "operator_ed25519.pub"
        if not (private.exists() and public.exists()):
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            key = Ed25519PrivateKey.generate()
            private.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.OpenSSH,
                    serialization.NoEncryption(),
                )
            )
            private.chmod(0o600)
            line = key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
            public.write_text(f"{line.decode()} {OPERATOR_KEY_NAME}\n")
        return private, public

    def pid(self) -> int | None:
        pid = super().pid()
        return pid if pid is not None and not _is_zombie(pid) else None

    def _start(self) -> None:
        if self.backend not in BACKENDS:
            raise DevenvError(
                f"PENGUINMAILS_HOSTWINDS_BACKEND must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if self.build_seconds < 0:
            raise DevenvError("PENGUINMAILS_HOSTWINDS_BUILD_SECONDS must be a number of seconds >= 0")
        self.api_key()
        _, public = self.operator_key()
        command = [
            sys.executable, "-m", "devenv.hostwinds_sim",
            "--host", self.host, "--port", str(self.port),
            "--backend", self.backend, "--podman-prefix", self.podman_prefix,
            "--build-seconds", str(self.build_seconds), "--delete-seconds", str(self.delete_seconds),
            "--processing-seconds", str(self.processing_seconds),
            "--api-key-file", str(self.dir / "api.key"),
            "--ssh-key", f"{OPERATOR_KEY_NAME}={public}",
        ]  # fmt: skip
        if self.persist:
            command += ["--state-file", str(self.state_file)]
        if self.faults:
            command += ["--faults", self.faults]
        self.pid_file.unlink(missing_ok=True)
        with open(self.dir / "hostwinds.log", "ab") as log:
            process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{process.pid}\n")

    def stop(self) -> ServiceStatus:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)

            def gone() -> bool:
                try:
                    os.waitpid(pid, os.WNOHANG)  # reap it when this process started it
                except ChildProcessError:
                    pass
                return not _alive(pid)

            wait_until(gone, f"{self.name} (pid {pid}) to stop", timeout=30)
        self.pid_file.unlink(missing_ok=True)
        return self.status()

    def health(self) -> dict:
        """What the running simulator says about itself (its backend and build time)."""
        with urllib.request.urlopen(f"{self.admin_url}/health", timeout=5) as answer:  # noqa: S310 - loopback
            return json.loads(answer.read())

    def status(self) -> ServiceStatus:
        status = super().status()
        if status.running:
            try:
                health = self.health()
                detail = f"{status.detail}, {health['backend']} backend, build {health['build_seconds']:g} s"
            except (OSError, ValueError, KeyError):
                detail = status.detail
            return ServiceStatus(status.name, True, status.address, detail)
        return status

    def env(self) -> dict[str, str]:
        private, _ = self.operator_key()
        return {
            "PENGUINMAILS_HOSTWINDS_ENDPOINT": self.endpoint,
            "PENGUINMAILS_HOSTWINDS_API_KEY": self.api_key(),
            "PENGUINMAILS_FLEET_SSH_PRIVATE_KEY": str(private),
        }
