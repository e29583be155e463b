"""The stack's monitoring: scrape targets for everything it declares, from the same `up` that creates it.

A dev stack writes its targets into the devenv Prometheus (:class:`ScrapeTargets`). With ``monitoring.deploy:
vps`` the platform hands the same plan to its monitoring VPS (modules/ansible/monitoring_host.py), where the
penguinmails exporter runs beside Prometheus. With ``external`` the plan is only exported (the preview
says so: ``penguinmails monitoring coverage`` fails until a Prometheus scrapes the stack).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi

from modules.config.model import MonitoringConfig
from modules.config.reputation import ReputationConfig
from modules.monitoring.targets import (
    MONITORING_EXPORTER,
    ScrapeTargets,
    TargetInputs,
    dev_exporters,
    plan_targets,
)


def exporter_settings(
    *,
    stack: str,
    environment: str,
    reputation: ReputationConfig,
    resolvers: Sequence[str],
    sending_ips: Sequence[str],
    queue: Mapping[str, str] | None,
    oltp_url: str | None,
    query_secrets: Mapping[str, str],
    dns_verification: Sequence[Mapping[str, Any]] = (),
    dns_ca_file: str | None = None,
    routes_token: str | None = None,
    warmup: Mapping[str, Any] | None = None,
    retention_urls: Mapping[str, str] | None = None,
    replicas: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The penguinmails exporter's config file (modules/monitoring/exporter.py), as one dict."""
    return {
        "stack": stack,
        # Fleet tiers' streaming replicas: {tier, url, ca_certificate} each, for the replication lag gauge.
        "replicas": [dict(replica) for replica in replicas],
        "queue": dict(queue) if queue else None,
        "oltp_url": oltp_url if reputation.enabled else None,
        "sending_ips": sorted(set(sending_ips)) if reputation.enabled else [],
        "dnsbl_zones": reputation.zone_entries(environment, query_secrets) if reputation.enabled else [],
        "resolvers": list(reputation.resolvers or resolvers),
        "check_interval_seconds": reputation.interval_for(environment),
        "concurrency": reputation.concurrency,
        "query_timeout_seconds": reputation.timeout,
        "dns_verification": [dict(item) for item in dns_verification],
        "dns_resolvers": list(resolvers),
        "dns_ca_file": dns_ca_file,
        # Every minute in dev (tests wait for it), every 5 minutes elsewhere.
        "dns_interval_seconds": 60.0 if environment == "dev" else 300.0,
        # The hosts' sender routes agents authenticate with this (modules/monitoring/routes.py).
        "routes_token": routes_token if reputation.enabled else None,
        # The warm-up job: {warmup_url, prometheus_url, warmup_plan, warmup_start_day} or nothing.
        **(
            {**warmup, "warmup_interval_seconds": 60.0 if environment == "dev" else 3600.0}
            if warmup and warmup.get("warmup_url") and warmup.get("prometheus_url")
            else {}
        ),
        # Row retention runs: tier → the tier's readonly URL (reads retention.runs only).
        **({"retention_urls": dict(retention_urls)} if retention_urls else {}),
    }


class Monitoring(pulumi.ComponentResource):
    """Scrape targets of one stack. ``nodes`` resolves to the mail hosts' ``[{name, ip}]``."""

    def __init__(
        self,
        name: str,
        config: MonitoringConfig,
        *,
        stack: str,
        dev: bool,
        deploy: str | None = None,
        nodes: pulumi.Input[Sequence[Mapping[str, str]]],
        tiers: Mapping[str, str],
        redis: bool,
        dns: bool,
        queue: bool,
        reputation: bool,
        after: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("penguinmails:monitoring:Monitoring", name, None, opts)
        deploy = deploy or ("devenv" if dev else "external")
        exporters: dict[str, Any] = dev_exporters() if dev else {}
        if deploy == "vps":
            exporters["penguinmails"] = MONITORING_EXPORTER  # beside Prometheus on the monitoring VPS
        configured = config.exporters.model_dump(exclude_none=True)
        if not configured.get("postgres"):
            configured.pop("postgres", None)
        exporters.update(configured)

        def plan(resolved_nodes: Sequence[Mapping[str, str]]) -> dict[str, list[dict[str, Any]]]:
            return plan_targets(
                TargetInputs(
                    stack=stack,
                    nodes=[{"name": n["name"], "ip": n["ip"]} for n in resolved_nodes],
                    tiers=tiers,
                    redis=redis,
                    dns=dns,
                    queue=queue,
                    reputation=reputation,
                    exporters=exporters,
                )
            )

        self.jobs = pulumi.Output.from_input(nodes).apply(plan)
        self.targets: ScrapeTargets | None = None
        if dev:
            # After the mail hosts' converge, which starts their exporters: no "down" alert while building.
            self.targets = ScrapeTargets(
                f"{name}-targets",
                stack=stack,
                jobs=self.jobs,
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)),
            )
        elif deploy == "external":
            pulumi.log.warn(
                "monitoring: no monitoring host is ordered for this stack (monitoring.deploy is external); set "
                "monitoring.deploy: vps, or converge one with ansible/playbooks/monitoring.yml and the "
                "monitoring_targets output (monitoring.enabled: false says nothing watches this stack)",
                self,
            )
        self.register_outputs({"jobs": self.jobs})
