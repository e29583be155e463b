"""The PenguinMails Pulumi program: read and validate config, compose the platform, export outputs.

Validation runs before any resource is declared, so bad config fails `pulumi preview` with the key and
the reason and nothing is read or changed.
"""

from __future__ import annotations

import pulumi

from modules.config.loader import load_stack_config
from modules.config.warmup import deprecations
from modules.errors import ConfigError
from modules.platform.component import Platform
from modules.postgres.component import default_prefix
from modules.queue import namespace_for

try:
    config = load_stack_config()
except ConfigError as error:
    raise pulumi.RunError(error.message) from None

for _message in deprecations(config):
    pulumi.log.warn(_message)

platform = Platform("penguinmails", config)

pulumi.export("environment", config.environment)
pulumi.export("tenants", [tenant.slug for tenant in config.tenants])
pulumi.export("redis_url", platform.redis_url)
pulumi.export("redis_queue_user", config.redis.queue_user)
if platform.redis_host is not None:  # Redis on its own VPS: clients verify its TLS by the stack's CA
    pulumi.export("redis_ca_certificate", platform.redis_ca_certificate)
    pulumi.export("redis_host_results", platform.redis_host.host_results)
# Where the stack's queue keys live in Redis (under the queue user's first key prefix).
pulumi.export(
    "queue_namespace", namespace_for(config.redis.key_prefixes[0], default_prefix(pulumi.get_stack()))
)
# The app role's connection string of each PostgreSQL tier (secrets).
for _tier, _postgres in platform.postgres_tiers.items():
    pulumi.export(f"postgres_{_tier}_app_url", _postgres.app_url)
    if _postgres.app_pooled_url is not None:  # the same role through PgBouncer (transaction mode; secret)
        pulumi.export(f"postgres_{_tier}_app_pooled_url", _postgres.app_pooled_url)
    if _postgres.worker_url is not None:  # the queue workers' role (secret)
        pulumi.export(f"postgres_{_tier}_worker_url", _postgres.worker_url)
    if _postgres.reputation_url is not None:  # the DNSBL checker's role (secret)
        pulumi.export(f"postgres_{_tier}_reputation_url", _postgres.reputation_url)
    if _postgres.warmup_url is not None:  # the IP warm-up job's and CLI's role (secret)
        pulumi.export(f"postgres_{_tier}_warmup_url", _postgres.warmup_url)
    if _postgres.readonly_replica_url is not None:  # the streaming replica, readonly role (secret)
        pulumi.export(f"postgres_{_tier}_readonly_replica_url", _postgres.readonly_replica_url)
# Tiers on their own VPS (mode fleet): clients verify the server (verify-full) against this CA.
for _tier, _host in platform.postgres_hosts.items():
    pulumi.export(f"postgres_{_tier}_ca_certificate", _host.ca_certificate)
    pulumi.export(f"postgres_{_tier}_host_results", _host.host_results)
# [{name, fqdn, ip, service_id}] per fleet node, for the Ansible inventory (no secrets in it).
pulumi.export("fleet_nodes", platform.fleet.inventory if platform.fleet else [])
# DNS and email authentication: published selectors, MTA-STS policies, PTRs and the live verification.
if platform.mail_dns is not None:
    pulumi.export("dkim_selectors", platform.mail_dns.dkim_selectors)
    pulumi.export("dkim_private_keys", platform.mail_dns.dkim_private_keys)  # secret
    pulumi.export("mta_sts_policies", platform.mail_dns.mta_sts_policies)
    pulumi.export("ptr_records", platform.mail_dns.ptr_records)
    pulumi.export("dns_verification", platform.mail_dns.verification)
# Per-host ok/changed/failed of the last mail-host convergence.
pulumi.export("mail_host_results", platform.mail_hosts.host_results if platform.mail_hosts else {})
if platform.monitoring_host is not None:
    # The monitoring VPS: its address (web UIs on its loopback, through `ssh -L`) and its converge.
    pulumi.export("monitoring_host", platform.monitoring_host.address)
    pulumi.export("monitoring_host_results", platform.monitoring_host.host_results)
# Prometheus file_sd groups per exporter job (no secrets): what the monitoring host scrapes.
if platform.monitoring is not None:
    pulumi.export("monitoring_targets", platform.monitoring.jobs)
    # The penguinmails exporter's sources (secret): `penguinmails monitoring exporter --stack S` reads it.
    pulumi.export("monitoring_exporter_config", platform.exporter_config)
