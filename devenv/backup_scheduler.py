"""The dev stack's backup scheduler: ``penguinmails db backup-scheduler --config schedule.json``.

pgBackRest runs as a process, so pg_cron cannot start it; this service runs the stack's full and
differential backups and its weekly restore drill by cron expression, as cron does on hosts. The stack
writes ``<devenv>/backup-scheduler/schedule.json`` (``penguinmails db backup-scheduler --stack dev
--install``); until then the service is idle. It listens on no port.
"""

from __future__ import annotations

import sys
from pathlib import Path

from devenv.base import REPO_ROOT, ProcessService, ServiceStatus


class BackupSchedulerService(ProcessService):
    name = "backup-scheduler"
    port = 0
    binary = "penguinmails"
    package = "(this project: make bootstrap)"

    @property
    def config_file(self) -> Path:
        return self.dir / "schedule.json"

    def executable(self) -> str:
        for candidate in (
            REPO_ROOT / ".venv" / "bin" / "penguinmails",
            Path(sys.executable).parent / "penguinmails",
        ):
            if candidate.exists():
                return str(candidate)
        return super().executable()

    def command(self) -> list[str]:
        return ["db", "backup-scheduler", "--config", str(self.config_file)]

    def running(self) -> bool:
        return self.pid() is not None

    @property
    def address(self) -> str:
        return "(no port)"

    def install(self, text: str) -> None:
        """Write the jobs (0600) and restart on them."""
        self.config_file.write_text(text)
        self.config_file.chmod(0o600)
        self.stop()
        self.start()

    def start(self) -> ServiceStatus:
        if not self.config_file.exists():
            return self.status()
        return super().start()

    def status(self) -> ServiceStatus:
        if not self.config_file.exists():
            return ServiceStatus(
                self.name, False, self.address, "no schedule yet (make up writes it)", idle=True
            )
        return super().status()
