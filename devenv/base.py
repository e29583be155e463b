"""What every local service shares: a data folder, a pid file, idempotent start/stop, a status line."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from modules.errors import DevenvError

REPO_ROOT = Path(__file__).resolve().parents[1]


def devenv_root() -> Path:
    """Where service data lives: ``$PENGUINMAILS_DEVENV_DIR`` or ``<repo>/.devenv`` (git-ignored)."""
    root = Path(os.environ.get("PENGUINMAILS_DEVENV_DIR", REPO_ROOT / ".devenv"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(check, what: str, timeout: float = 30.0, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise DevenvError(f"timed out after {timeout:.0f} s waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unless_zombie(pid: int | None) -> int | None:
    """``pid``, or None when it is an exited child not yet reaped (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if pid else ""
    except (OSError, IndexError):
        return None
    return None if state == "Z" else pid


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    address: str
    detail: str = ""
    idle: bool = False  # not running because there is nothing to run yet (not a failure)


class Service:
    """A daemon started from a config file under ``.devenv/<name>/``; subclasses say how."""

    name = "service"
    host = "127.0.0.1"
    port = 0

    def __init__(self, root: Path | None = None, port: int | None = None):
        # Tests pass their own root and port to run a private instance beside the shared one.
        if port is not None:
            self.port = port
        self.dir = (root or devenv_root()) / self.name
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def pid_file(self) -> Path:
        return self.dir / f"{self.name}.pid"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def secret(self, filename: str, length: int = 32) -> str:
        """A dev-only credential made once and kept (mode 0600) so restarts keep working."""
        path = self.dir / filename
        if not path.exists():
            path.write_text(secrets.token_urlsafe(length))
            path.chmod(0o600)
        return path.read_text().strip()

    def running(self) -> bool:
        return self.pid() is not None and port_open(self.host, self.port)

    def start(self) -> ServiceStatus:
        if not self.running():
            self._start()
            wait_until(self.running, f"{self.name} on {self.address}", timeout=60)
        return self.status()

    def stop(self) -> ServiceStatus:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not pid_alive(pid), f"{self.name} (pid {pid}) to stop", timeout=30)
        self.pid_file.unlink(missing_ok=True)
        return self.status()

    def status(self) -> ServiceStatus:
        running = self.running()
        return ServiceStatus(self.name, running, self.address, f"pid {self.pid()}" if running else "stopped")

    def env(self) -> dict[str, str]:
        """Variables the providers and tests read to reach this service."""
        return {}

    def _start(self) -> None:
        raise NotImplementedError


class ProcessService(Service):
    """A daemon that stays in the foreground (Prometheus, Alertmanager, the exporters): devenv starts it in a
    session of its own with its output in ``<name>.log`` and keeps its pid; there is no init system here."""

    binary = ""
    package = ""

    def command(self) -> list[str]:
        raise NotImplementedError

    def process_env(self) -> dict[str, str]:
        """Extra environment of the daemon: where credentials go, since ``ps`` shows the command line."""
        return {}

    def prepare(self) -> None:
        """Write config and credentials before the daemon starts."""

    def executable(self) -> str:
        found = shutil.which(self.binary) or f"/usr/bin/{self.binary}"
        if not Path(found).exists():
            raise DevenvError(
                f"{self.name}: {self.binary} is not installed (run `make bootstrap`; Debian package {self.package})"
            )
        return found

    def pid(self) -> int | None:
        """As the base class, but an exited child not yet reaped (a zombie of this process) is gone."""
        return unless_zombie(super().pid())

    def _start(self) -> None:
        binary = self.executable()
        self.prepare()
        # A minimal environment: the daemon gets what it needs, not the caller's secrets.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **self.process_env()}
        with (self.dir / f"{self.name}.log").open("ab") as log:
            process = subprocess.Popen(
                [binary, *self.command()],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.dir,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        # Returns as soon as it listens or exits, so a refused flag or config fails at once, with its message.
        wait_until(
            lambda: process.poll() is not None or self.running(), f"{self.name} on {self.address}", timeout=60
        )
        if process.poll() is not None:
            self.pid_file.unlink(missing_ok=True)
            raise DevenvError(f"{self.name}: exited with {process.returncode}: {self.log_tail()}")

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = (self.dir / f"{self.name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self) -> ServiceStatus:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: self.pid() is None, f"{self.name} (pid {pid}) to stop", timeout=30)
        self.pid_file.unlink(missing_ok=True)
        return self.status()
