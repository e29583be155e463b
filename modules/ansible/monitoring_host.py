"""``MonitoringHost``: a stack's monitoring VPS, converged with ``playbooks/monitoring.yml`` during ``up``.

Prometheus with the targets the stack generates (modules/monitoring/targets.py), Alertmanager to the
configured webhook and email, and the penguinmails exporter from a wheelhouse built on the controller
(modules/ansible/wheelhouse.py), with its routes endpoint on the host's address for the mail hosts'
sender routes agents. The exporter's config (database and Redis passwords, DNSBL keys, the routes
token) and the smarthost password travel as secret variables: encrypted in state, ``no_log`` on the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi

from modules.ansible import wheelhouse
from modules.ansible.resources import DEFAULT_TIMEOUT, AnsiblePlaybook

PLAYBOOK = "monitoring.yml"
EXPORTER_LISTEN = "127.0.0.1:9395"
ROUTES_PORT = 9396
PROMETHEUS_URL = "http://127.0.0.1:9090"  # the warm-up job reads its figures on the same host


def routes_url(ip: str) -> str:
    """Where the mail hosts' agents reach the exporter's routes endpoint on the monitoring host."""
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{ROUTES_PORT}/v1/sending-ips"


@dataclass(frozen=True)
class AlertEmail:
    """Alert mail through the platform's own submission service (a fleet node's port 587)."""

    to: list[str]
    sender: str
    smarthost: str  # ip:587
    server_name: str  # the name the smarthost's certificate is for
    ca_certificate: str = ""  # PEM; empty: the system's CAs
    pin_presented: bool = False  # dev stacks without ACME: trust the self-signed certificate it presents


@dataclass(frozen=True)
class MonitoringHostSettings:
    stack: str
    retention_time: str = "30d"
    webhook_url: str | None = None
    email: AlertEmail | None = None
    extra_vars: Mapping[str, Any] = field(default_factory=dict)


def playbook_vars(
    settings: MonitoringHostSettings, host_ip: str, jobs: Mapping[str, Any], wheels: str
) -> dict[str, Any]:
    """The roles' plain variables (no secret among them)."""
    email = settings.email
    plain: dict[str, Any] = {
        "monitoring_stack": settings.stack,
        "monitoring_targets": dict(jobs),
        "monitoring_retention_time": settings.retention_time,
        "monitoring_webhook_url": settings.webhook_url or "",
        "monitoring_email_to": ", ".join(email.to) if email else "",
        "monitoring_email_from": email.sender if email else "",
        "monitoring_smarthost": email.smarthost if email else "",
        "monitoring_smarthost_username": email.sender if email else "",
        "monitoring_smarthost_server_name": email.server_name if email else "",
        "monitoring_smarthost_ca_certificate": email.ca_certificate if email else "",
        "monitoring_smarthost_pin_presented": bool(email and email.pin_presented),
        "penguinmails_exporter_wheelhouse": wheels,
        "penguinmails_exporter_listen": EXPORTER_LISTEN,
        "penguinmails_exporter_routes_listen": f"{host_ip}:{ROUTES_PORT}",
    }
    plain.update(settings.extra_vars)
    return plain


class MonitoringHost(pulumi.ComponentResource):
    """Converges ``host`` (``{name, ip, fqdn?}``) into the stack's monitoring; ``jobs`` are the scrape
    targets, ``exporter_config`` the exporter's config (a secret), ``smarthost_password`` the alert
    login's password when ``settings.email`` is set."""

    def __init__(
        self,
        name: str,
        *,
        host: pulumi.Input[Mapping[str, Any]],
        settings: pulumi.Input[MonitoringHostSettings],
        jobs: pulumi.Input[Mapping[str, Any]],
        exporter_config: pulumi.Input[Mapping[str, Any]],
        exporter_ca_certificate: str = "",
        smarthost_password: pulumi.Input[str] | None = None,
        connection: dict[str, Any] | None = None,
        timeout_seconds: int = DEFAULT_TIMEOUT,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("penguinmails:ansible:MonitoringHost", name, None, opts)
        node = pulumi.Output.from_input(host)
        # Built here, at plan time: its digest is in the variables, so new library versions or changed
        # exporter code re-run the playbook.
        wheels = wheelhouse.relative(wheelhouse.ensure())
        plain = pulumi.Output.all(node, jobs, settings).apply(
            lambda v: {
                **playbook_vars(v[2], str(v[0]["ip"]), v[1], wheels),
                "penguinmails_exporter_ca_certificate": exporter_ca_certificate,
            }
        )
        secrets = pulumi.Output.secret(
            pulumi.Output.all(exporter_config, smarthost_password or "").apply(
                lambda v: {
                    "penguinmails_exporter_config": dict(v[0]),
                    "monitoring_smarthost_password": v[1] or "",
                }
            )
        )
        self.playbook = AnsiblePlaybook(
            f"{name}-playbook",
            hosts=node.apply(lambda h: [dict(h)]),
            playbook=PLAYBOOK,
            vars=plain,
            secret_vars=secrets,
            connection=connection or {},
            timeout_seconds=timeout_seconds,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.host_results = self.playbook.host_results
        self.address = node.apply(lambda h: str(h["ip"]))
        self.routes_url = self.address.apply(routes_url)
        self.register_outputs({"host_results": self.host_results, "address": self.address})
