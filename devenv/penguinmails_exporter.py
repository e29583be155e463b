"""The penguinmails exporter of the dev stack (queue depth, DNSBL listings, quarantines) on 127.0.0.1:9395.

Its config holds the stack's worker and reputation passwords, so the stack writes it (``penguinmails
monitoring exporter --stack dev --install``, run by ``make up``) as ``<devenv>/penguinmails-exporter/
exporter.json``, mode 0600, and this service runs ``penguinmails monitoring exporter`` on it. Until a stack
has written one there is nothing to export: start reports that and leaves the port closed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from devenv.base import REPO_ROOT, ProcessService, ServiceStatus
from devenv.prometheus import PODMAN_GATEWAY

PENGUINMAILS_EXPORTER_PORT = 9395
# The routes endpoint the hosts' sender routes agents poll: on podman's bridge, which the hosts reach.
ROUTES_ADDRESS = f"{PODMAN_GATEWAY}:9396"
ROUTES_URL = f"http://{ROUTES_ADDRESS}/v1/sending-ips"


class PenguinmailsExporterService(ProcessService):
    name = "penguinmails-exporter"
    port = PENGUINMAILS_EXPORTER_PORT
    binary = "penguinmails"
    package = "(this project: make bootstrap)"

    @property
    def config_file(self) -> Path:
        return self.dir / "exporter.json"

    def executable(self) -> str:
        beside = Path(sys.executable).parent / "penguinmails"
        for candidate in (beside, REPO_ROOT / ".venv" / "bin" / "penguinmails"):
            if candidate.exists():
                return str(candidate)
        return shutil.which("penguinmails") or super().executable()

    def command(self) -> list[str]:
        command = ["monitoring", "exporter", "--config", str(self.config_file), "--listen", self.address]
        if self._serves_routes():
            command += ["--routes-listen", ROUTES_ADDRESS]
        return command

    def _serves_routes(self) -> bool:
        """The stack's config carries the hosts' token (older configs do not: no endpoint then)."""
        try:
            return bool(json.loads(self.config_file.read_text()).get("routes_token"))
        except (OSError, ValueError):
            return False

    @property
    def code_file(self) -> Path:
        return self.dir / "code.digest"

    def install(self, text: str) -> bool:
        """Write the stack's config (0600) and (re)start on it; False when it was already running on it
        with the checkout's code (changed exporter code restarts it too, as a new wheelhouse does on a
        monitoring VPS)."""
        from modules.ansible import wheelhouse

        code = wheelhouse.digest()
        same_code = self.code_file.exists() and self.code_file.read_text() == code
        if (
            self.config_file.exists()
            and self.config_file.read_text() == text
            and self.running()
            and same_code
        ):
            return False
        temporary = self.config_file.with_suffix(".tmp")
        temporary.touch(mode=0o600)
        temporary.chmod(0o600)
        temporary.write_text(text)
        temporary.replace(self.config_file)
        self.stop()
        self.start()
        self.code_file.write_text(code)
        return True

    def start(self) -> ServiceStatus:
        if not self.config_file.exists():
            return ServiceStatus(
                self.name, False, self.address, "no stack config yet (make up writes it)", idle=True
            )
        if self._serves_routes():
            from devenv.podman_hosts import ensure_default_bridge

            ensure_default_bridge()  # the endpoint listens on the bridge's gateway address
        return super().start()

    def status(self) -> ServiceStatus:
        if not self.config_file.exists() and not self.running():
            return ServiceStatus(
                self.name, False, self.address, "no stack config yet (make up writes it)", idle=True
            )
        return super().status()

    def env(self) -> dict[str, str]:
        return {
            "PENGUINMAILS_PENGUINMAILS_EXPORTER": self.address,
            "PENGUINMAILS_SENDER_ROUTES_URL": ROUTES_URL,
        }
