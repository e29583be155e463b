"""Prometheus and Alertmanager of the dev stack (Debian's packages), loopback only, data in ``.devenv/``.

Prometheus has one scrape job per exporter kind (:data:`JOBS`), each reading its targets from
``<devenv>/prometheus/targets/<job>/*.json`` (file_sd, one file per stack, re-read every 5 s), so the
Pulumi side adds a stack's targets by writing a file, without touching the config. devenv writes the
``devenv.json`` files of its own servers (``stack=devenv``). Rules come straight from the checkout
(``ansible/roles/monitoring/files/rules/*.rules.yml``, the production role's files); a changed config is
applied by a reload (``--web.enable-lifecycle``), never a restart. Alertmanager sends every alert to the
local sink (:mod:`devenv.alert_sink`), grouped by ``alertname, stack, component`` with short dev timers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import yaml

from devenv.base import REPO_ROOT, ProcessService, ServiceStatus, devenv_root
from modules.errors import DevenvError

PROMETHEUS_PORT = 9390
ALERTMANAGER_PORT = 9393
ALERT_SINK_PORT = 9394
# One scrape job per exporter kind (the contract of issue 12); the Pulumi side writes <job>/<stack>.json.
JOBS = ("node", "postfix", "postgres", "redis", "bind", "penguinmails", "prometheus", "alertmanager")
DEVENV_STACK = "devenv"
PODMAN_GATEWAY = "10.88.0.1"  # this machine's address on podman's default bridge
RULES_GLOB = REPO_ROOT / "ansible" / "roles" / "monitoring" / "files" / "rules" / "*.rules.yml"
INTERVAL = "5s"  # scrape, evaluation and file_sd refresh in dev: tests wait seconds, not minutes
RETENTION = "3d"


def targets_dir(root: Path | None = None) -> Path:
    """``<devenv>/prometheus/targets``: where file_sd target files go (``PENGUINMAILS_PROMETHEUS_TARGETS_DIR``)."""
    return (root or devenv_root()) / "prometheus" / "targets"


def write_targets(
    root: Path | None, job: str, targets: list[str], labels: dict[str, str], stack: str = DEVENV_STACK
) -> Path:
    """Write ``<targets>/<job>/<stack>.json`` atomically (Prometheus may read it at any moment)."""
    if job not in JOBS:
        raise DevenvError(f"prometheus: {job!r} is not a scrape job (known: {', '.join(JOBS)})")
    folder = targets_dir(root) / job
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stack}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps([{"targets": targets, "labels": {"stack": stack, **labels}}], indent=2))
    os.replace(temporary, path)
    return path


def http_json(url: str, method: str = "GET", body: object | None = None, timeout: float = 5) -> object:
    """One JSON request to a loopback service (Prometheus, Alertmanager, the sink)."""
    if not url.startswith("http://127.0.0.1:"):
        raise DevenvError(f"devenv: {url} is not a loopback address")
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - loopback
        text = answer.read()
    return json.loads(text) if text.strip() else None


class AlertmanagerService(ProcessService):
    name = "alertmanager"
    port = ALERTMANAGER_PORT
    binary = "prometheus-alertmanager"
    package = "prometheus-alertmanager"

    def __init__(self, root: Path | None = None, port: int | None = None, sink_port: int = ALERT_SINK_PORT):
        super().__init__(root, port)
        self.root = root
        self.sink_url = f"http://127.0.0.1:{sink_port}/alerts"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def config_file(self) -> Path:
        return self.dir / "alertmanager.yml"

    def config(self) -> dict:
        return {
            "route": {
                "receiver": "sink",
                "group_by": ["alertname", "stack", "component"],
                "group_wait": "5s",
                "group_interval": "10s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {"name": "sink", "webhook_configs": [{"url": self.sink_url, "send_resolved": True}]}
            ],
        }

    def prepare(self) -> None:
        self.config_file.write_text(
            "# Written by devenv/prometheus.py on every start.\n" + yaml.safe_dump(self.config())
        )
        amtool = shutil.which("amtool")
        if amtool:
            result = subprocess.run(
                [amtool, "check-config", str(self.config_file)], capture_output=True, text=True, timeout=30
            )
            if result.returncode != 0:
                raise DevenvError(
                    f"alertmanager: amtool rejected {self.config_file}: {result.stdout}{result.stderr}"
                )
        write_targets(self.root, "alertmanager", [self.address], {"component": "monitoring"})

    def command(self) -> list[str]:
        return [
            f"--config.file={self.config_file}",
            f"--storage.path={self.dir / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",  # a single instance: no gossip port
            "--log.level=warn",
        ]

    def start(self) -> ServiceStatus:
        if self.running() and self.config_file.exists():
            before = self.config_file.read_text()
            self.prepare()
            if self.config_file.read_text() != before:
                http_json(f"{self.url}/-/reload", method="POST")
            return self.status()
        return super().start()

    def env(self) -> dict[str, str]:
        return {"PENGUINMAILS_ALERTMANAGER_URL": self.url}


class PrometheusService(ProcessService):
    name = "prometheus"
    port = PROMETHEUS_PORT
    binary = "prometheus"
    package = "prometheus"

    def __init__(
        self,
        root: Path | None = None,
        port: int | None = None,
        alertmanager_port: int = ALERTMANAGER_PORT,
        rules: Path = RULES_GLOB,
    ):
        super().__init__(root, port)
        self.root = root
        self.alertmanager = f"127.0.0.1:{alertmanager_port}"
        self.rules = rules
        self.targets = targets_dir(root)

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def config_file(self) -> Path:
        return self.dir / "prometheus.yml"

    def config(self) -> dict:
        return {
            "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL, "scrape_timeout": "4s"},
            "rule_files": [str(self.rules)],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [self.alertmanager]}]}]},
            "scrape_configs": [
                {
                    "job_name": job,
                    "file_sd_configs": [
                        {"files": [str(self.targets / job / "*.json")], "refresh_interval": INTERVAL}
                    ],
                }
                for job in JOBS
            ],
        }

    def prepare(self) -> None:
        for job in JOBS:
            (self.targets / job).mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            "# Written by devenv/prometheus.py on every start.\n"
            + yaml.safe_dump(self.config(), sort_keys=False)
        )
        promtool = shutil.which("promtool")
        if promtool:
            # Checks the rule files too: a broken rule fails here with promtool's message, not in a log.
            result = subprocess.run(
                [promtool, "check", "config", str(self.config_file)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if result.returncode != 0:
                raise DevenvError(
                    f"prometheus: promtool rejected {self.config_file}: {(result.stdout + result.stderr).strip()}"
                )
        write_targets(self.root, "prometheus", [self.address], {"component": "monitoring"})

    def command(self) -> list[str]:
        return [
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--storage.tsdb.retention.time={RETENTION}",
            f"--web.listen-address={self.address}",
            "--web.enable-lifecycle",  # POST /-/reload applies a changed config without a restart
            # Resend firing alerts every evaluation (default 1 min): one sent while Alertmanager was still
            # being discovered (first start, reload) is dropped, and tests should not wait a minute for it.
            f"--rules.alert.resend-delay={INTERVAL}",
            "--log.level=warn",
        ]

    def reload(self) -> None:
        """Re-read the config and the rule files (a new or changed ``*.rules.yml`` of the checkout)."""
        self.prepare()
        http_json(f"{self.url}/-/reload", method="POST", timeout=30)

    def start(self) -> ServiceStatus:
        if self.running():
            # Idempotent, and picks up changed rules or config: a reload keeps the data and the process.
            self.reload()
            return self.status()
        return super().start()

    def targets_health(self) -> list[dict]:
        """The active targets as Prometheus sees them (``/api/v1/targets``)."""
        answer = http_json(f"{self.url}/api/v1/targets?state=active")
        return answer["data"]["activeTargets"]

    def query(self, expression: str) -> list[dict]:
        from urllib.parse import quote

        answer = http_json(f"{self.url}/api/v1/query?query={quote(expression)}")
        return answer["data"]["result"]

    def status(self) -> ServiceStatus:
        status = super().status()
        if not status.running:
            return status
        try:
            targets = self.targets_health()
        except (OSError, ValueError, KeyError):
            return status
        up = sum(1 for t in targets if t.get("health") == "up")
        return ServiceStatus(
            status.name, True, status.address, f"{status.detail}, targets up: {up}/{len(targets)}"
        )

    def env(self) -> dict[str, str]:
        return {
            "PENGUINMAILS_PROMETHEUS_URL": self.url,
            "PENGUINMAILS_PROMETHEUS_TARGETS_DIR": str(self.targets),
            # Where its scrapes of podman hosts come from (this machine on the bridge): the only address
            # a dev mail host's firewall opens its exporters to.
            "PENGUINMAILS_PROMETHEUS_SCRAPE_SOURCE": PODMAN_GATEWAY,
        }
