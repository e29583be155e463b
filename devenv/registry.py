"""The services of the embedded environment, in start order."""

from __future__ import annotations

from devenv.alert_sink import AlertSinkService
from devenv.base import Service, ServiceStatus
from devenv.bind import BindService
from devenv.exporters import BindExporterService, PostgresExporterService, RedisExporterService
from devenv.hostwinds import HostwindsService
from devenv.pebble import PebbleService
from devenv.penguinmails_exporter import PenguinmailsExporterService
from devenv.pgbouncer import PgBouncerService
from devenv.postgres import PostgresService
from devenv.prometheus import AlertmanagerService, PrometheusService
from devenv.redis import RedisService
from modules.errors import ToolkitError

# Pebble after BIND: it resolves DNS-01 challenges there. Monitoring after the servers it watches, the sink
# before Alertmanager, and Prometheus last so its first scrape finds every exporter up.
SERVICE_CLASSES: list[type[Service]] = [
    RedisService,
    HostwindsService,
    PostgresService,
    PgBouncerService,  # after postgres: it turns on the server's TLS and makes its auth role
    BindService,
    PebbleService,
    AlertSinkService,
    AlertmanagerService,
    PostgresExporterService,
    RedisExporterService,
    BindExporterService,
    PenguinmailsExporterService,
    PrometheusService,
]


def services(names: list[str] | None = None) -> list[Service]:
    chosen = [cls() for cls in SERVICE_CLASSES]
    if names:
        unknown = set(names) - {s.name for s in chosen}
        if unknown:
            known = ", ".join(s.name for s in chosen)
            raise SystemExit(f"unknown service(s): {', '.join(sorted(unknown))} (known: {known})")
        chosen = [s for s in chosen if s.name in names]
    return chosen


def environment() -> dict[str, str]:
    """Every running service's variables, for `eval "$(python -m devenv env)"` and the test harness."""
    merged: dict[str, str] = {}
    for service in services():
        merged.update(service.env())
    return merged


def control(action: str, names: list[str] | None = None) -> tuple[list[ServiceStatus], bool]:
    """Run start/stop/status on the chosen services (stop in reverse order); also say if any failed."""
    chosen = services(names)
    if action == "stop":
        chosen.reverse()
    statuses: list[ServiceStatus] = []
    failed = False
    for service in chosen:
        try:
            status = getattr(service, action)()
        except ToolkitError as exc:
            status = ServiceStatus(service.name, False, service.address, f"FAILED: {exc.message}")
        statuses.append(status)
        failed |= action != "stop" and not status.running and not status.idle
    return statuses, failed
