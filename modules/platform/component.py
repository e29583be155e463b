"""The stack's root component: every other part of the platform hangs below it.

Later issues add the Hostwinds fleet, the PostgreSQL tiers, DNS and the mail hosts as children here;
the foundation slice declares the credentials those parts will use and the queue's Redis user.
"""

from __future__ import annotations

import os
from pathlib import Path

import pulumi

from modules.acme import settings as acme_settings
from modules.ansible.mailhosts import MailHosts, alert_sender, converges
from modules.ansible.monitoring_host import PROMETHEUS_URL as MONITORING_PROMETHEUS_URL
from modules.ansible.monitoring_host import AlertEmail, MonitoringHost, MonitoringHostSettings
from modules.ansible.monitoring_host import routes_url as monitoring_routes_url
from modules.ansible.postgres_host import PostgresHost
from modules.ansible.redis_host import RedisHost
from modules.config.model import TIERS, PostgresTierConfig, StackConfig
from modules.config.warmup import start_day as warmup_start_day
from modules.dns.component import MailDns
from modules.dns.sts_fetch import ca_file_for
from modules.errors import ToolkitError
from modules.hostwinds.fleet import VpsFleet, sending_addresses
from modules.monitoring.component import Monitoring, exporter_settings
from modules.postgres.backup import fleet as fleet_backup
from modules.postgres.backup.resource import backup_stanzas
from modules.postgres.component import PostgresTier, default_prefix
from modules.postgres.duties import duties_for
from modules.postgres.fleet_registry import FleetNode, FleetNodeArgs
from modules.postgres.retention import RETAINED_TIERS
from modules.queue import namespace_for
from modules.redis.resources import RedisUser
from modules.secrets.resources import GeneratedSecret
from modules.secrets.tls import PrivateCa, ServerCertificate

TIER_ROLES = ("migrator", "app", "readonly")


def tier_roles(tier: str) -> tuple[str, ...]:
    """The roles of a tier that get a password: every tier's three, and the queue tier's ``worker``."""
    return ("migrator", *duties_for(tier))


def _devenv_address(config: StackConfig, variable: str, part: str) -> str | None:
    """A devenv service's address for a dev stack (``source tools/env.sh`` exports it); None for any other
    stack, whatever the shell has: local settings never reach a real stack."""
    if config.environment != "dev":
        return None
    value = os.environ.get(variable)
    if not value:
        pulumi.log.warn(f"{part}: {variable} is unset (run `source tools/env.sh`)")
    return value or None


def _read_ca(path: str | None) -> str:
    """A CA file's PEM for a host (the monitoring VPS cannot read the controller's path); "" for none."""
    if not path:
        return ""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ToolkitError(f"monitoring: cannot read the CA file {path}: {exc.strerror or exc}") from None


def _with_backups(stanzas: list) -> dict:
    """The exporter's ``backup_stanzas`` (stanza name and pgBackRest folder of each)."""
    return {"backup_stanzas": [{"stanza": s, "work_dir": w} for s, w in stanzas if s and w]}


class Platform(pulumi.ComponentResource):
    """A whole PenguinMails environment, built from a validated :class:`StackConfig`."""

    def __init__(self, name: str, config: StackConfig, opts: pulumi.ResourceOptions | None = None):
        super().__init__("penguinmails:platform:Platform", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.config = config

        # One password per tier role (the queue tier also has its worker role).
        self.tier_passwords: dict[str, dict[str, pulumi.Output[str]]] = {
            tier: {
                role: GeneratedSecret(f"{name}-{tier}-{role}-password", length=32, opts=child).result
                for role in tier_roles(tier)
            }
            for tier in TIERS
        }

        queue_password = GeneratedSecret(f"{name}-redis-queue-password", length=40, opts=child)
        self.redis_user: RedisUser | None = None
        self.redis_host: RedisHost | None = None
        self.redis_ca_certificate: pulumi.Output[str] | None = None
        if config.redis.deploy == "vps":
            host, port = self._redis_vps(name, config, queue_password.result, child)
            scheme = "rediss"
        else:
            self.redis_user = RedisUser(
                f"{name}-redis-queue-user",
                username=config.redis.queue_user,
                password=queue_password.result,
                key_prefixes=config.redis.key_prefixes,
                opts=child,
            )
            host, port = config.redis.host, config.redis.port
            scheme = "rediss" if config.redis.tls else "redis"
        self.redis_url = pulumi.Output.secret(
            pulumi.Output.format(
                "{0}://{1}:{2}@{3}:{4}/0", scheme, config.redis.queue_user, queue_password.result, host, port
            )
        )

        # The sending fleet on Hostwinds (the simulator in the dev stack); only when nodes are asked for.
        self.fleet = VpsFleet(f"{name}-fleet", config.fleet, opts=child) if config.fleet.nodes > 0 else None

        # DNS and mail authentication for the tenants' sending domains, on the fleet's addresses.
        self.mail_dns = None
        if config.tenants:
            node_ips = {}
            if self.fleet is not None:
                for index, node in enumerate(config.fleet.node_names(), start=1):
                    node_ips[index] = self.fleet.inventory.apply(
                        lambda inventory, node=node: next(n["ip"] for n in inventory if n["name"] == node)
                    )
            proven = self.fleet.proven_ips() if self.fleet is not None else {}
            self.mail_dns = MailDns(f"{name}-dns", config, node_ips=node_ips, opts=child, proven_ips=proven)

        # The monitoring VPS (monitoring.deploy: vps), ordered like a fleet node; converged further below,
        # once the targets it scrapes exist. The mail hosts open their exporters to its address.
        self.monitoring_node: pulumi.Output[dict] | None = None
        self.monitoring_host: MonitoringHost | None = None
        if config.monitoring.enabled and config.monitoring.deploy_for(config.environment) == "vps":
            assert config.monitoring.vps is not None  # the config model requires it for deploy: vps
            vps = VpsFleet(f"{name}-monitoring-vps", config.monitoring.vps, opts=child)
            self.monitoring_node = vps.inventory.apply(lambda inventory: inventory[0])

        # The hosts' sender routes agents poll the exporter's routes endpoint with this token, to pause or
        # move the domains of a quarantined IP (modules/monitoring/routes.py).
        self.routes_token = None
        routes_url = None
        if self.fleet is not None and config.monitoring.enabled and config.reputation.enabled:
            self.routes_token = GeneratedSecret(f"{name}-sender-routes-token", length=40, opts=child).result
            routes_url = self._routes_url(config)

        # The fleet converged with the mail roles (Ansible) once it is ready and the DKIM keys are in DNS.
        self.mail_hosts = None
        if self.fleet is not None and converges(config, pulumi.get_stack()):
            self.mail_hosts = MailHosts(
                f"{name}-mail",
                config,
                self.fleet.inventory,
                self.mail_dns,
                opts=child,
                monitoring_enabled=config.monitoring.enabled,
                monitoring_sources=self._scrape_sources(config),
                sender_routes_url=routes_url,
                sender_routes_token=self.routes_token,
            )

        # Tiers with mode fleet: their own VPS (and replica), converged before the tier's roles and schema.
        self.postgres_hosts: dict[str, PostgresHost] = {
            tier: self._postgres_vps(name, tier, tier_config, config, child)
            for tier, tier_config in config.postgres.tiers().items()
            if tier_config.enabled and tier_config.mode == "fleet"
        }

        # The four PostgreSQL tiers (roles, database, migrations); a tier with enabled: false is left out.
        pooler_ca = os.environ.get("PENGUINMAILS_PGBOUNCER_CA_FILE") if config.environment == "dev" else None
        self.postgres_tiers = {
            tier: PostgresTier(
                f"{name}-postgres-{tier}",
                tier,
                tier_config,
                self.tier_passwords[tier],
                opts=child,
                pooler_ca_file=pooler_ca if tier_config.pooling else None,
                **self._fleet_tier_inputs(tier),
            )
            for tier, tier_config in config.postgres.tiers().items()
            if tier_config.enabled
        }

        # Backups (pgBackRest to S3, PITR): one stanza per cluster of the local tiers, after their schemas.
        self.backup_stanzas = backup_stanzas(name, config.postgres, list(self.postgres_tiers.values()), child)

        # Each fleet node in the OLTP tier's inventory, where the DNSBL checker and the warm-up job find its IP.
        self.fleet_nodes: list[FleetNode] = []
        oltp = self.postgres_tiers.get("oltp")
        if self.fleet is not None and oltp is not None:
            for node in config.fleet.node_names():
                entry = self.fleet.inventory.apply(
                    lambda inventory, node=node: next(n for n in inventory if n["name"] == node)
                )
                self.fleet_nodes.append(
                    FleetNode(
                        f"{name}-fleet-node-{node}",
                        FleetNodeArgs(
                            tier="oltp",
                            database=oltp.names.database,
                            mark=f"pulumi:{pulumi.get_project()}/{pulumi.get_stack()}/{node}",
                            server_id=entry.apply(lambda n: str(n["service_id"])),
                            hostname=entry.apply(lambda n: n.get("fqdn") or n["name"]),
                            ip=entry.apply(lambda n: n["ip"]),
                            additional_ips=entry.apply(lambda n: n.get("additional_ips") or []),
                            server=self._fleet_tier_inputs("oltp").get("server"),
                        ),
                        opts=pulumi.ResourceOptions(parent=self, depends_on=[oltp.migrations]),
                    )
                )

        # Scrape targets for every part above (mail hosts once converged, tiers, Redis, DNS, the queue).
        self.monitoring = None
        if config.monitoring.enabled:
            mail_nodes: pulumi.Input[list] = []
            if self.mail_hosts is not None:
                mail_nodes = self.fleet.inventory
            self.exporter_config = self._exporter_config(config)
            deploy = config.monitoring.deploy_for(config.environment)
            self.monitoring = Monitoring(
                f"{name}-monitoring",
                config.monitoring,
                stack=pulumi.get_stack(),
                dev=deploy == "devenv",
                deploy=deploy,
                nodes=mail_nodes,
                tiers={tier: tier_.names.database for tier, tier_ in self.postgres_tiers.items()},
                redis=True,
                dns=any(zone.backend == "rfc2136" for zone in config.dns.zones),
                queue="queue" in self.postgres_tiers,
                reputation=self.fleet is not None,
                after=[r for r in (self.mail_hosts, *self.postgres_tiers.values()) if r is not None],
                opts=child,
            )
            if self.monitoring_node is not None:
                self.monitoring_host = self._monitoring_host(name, config, child)
        self.register_outputs({"redis_url": self.redis_url})

    def _monitoring_host(self, name: str, config: StackConfig, child) -> MonitoringHost:
        """Converge the monitoring VPS once the mail hosts run their exporters (no "down" while building)."""
        vps = config.monitoring.vps
        assert vps is not None and self.monitoring is not None and self.monitoring_node is not None
        email = None
        sender = alert_sender(config)
        if sender and self.mail_hosts is not None:
            domain = sender.rpartition("@")[2]
            node_index = next(d.sending_node for _, d in config.sending_domains() if d.name == domain)
            node_name = config.fleet.node_names()[node_index - 1]
            smarthost = self.fleet.inventory.apply(
                lambda inventory: next(n for n in inventory if n["name"] == node_name)
            )
            email = smarthost.apply(
                lambda n: AlertEmail(
                    to=list(vps.email_to),
                    sender=sender,
                    smarthost=f"{n['ip']}:587",
                    server_name=n.get("fqdn") or n["name"],
                    # The hosts' ACME certificates chain to the stack's CA (the system's, or Pebble's in dev);
                    # a dev stack's hosts without ACME have self-signed ones; real stacks never pin.
                    ca_certificate=_read_ca(ca_file_for(config)) if acme_settings.enabled(config) else "",
                    pin_presented=config.environment == "dev" and not acme_settings.enabled(config),
                )
            )
        settings = pulumi.Output.from_input(email).apply(
            lambda e: MonitoringHostSettings(
                stack=pulumi.get_stack(),
                retention_time=vps.retention_time,
                webhook_url=vps.webhook_url,
                email=e,
            )
        )
        return MonitoringHost(
            f"{name}-monitoring-host",
            host=self.monitoring_node,
            settings=settings,
            jobs=self.monitoring.jobs,
            exporter_config=self.exporter_config,
            exporter_ca_certificate=_read_ca(ca_file_for(config)),
            smarthost_password=self.mail_hosts.alert_password if self.mail_hosts is not None else None,
            connection={"host_key_checking": "off" if config.environment == "dev" else "accept-new"},
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[r for r in (self.mail_hosts, *self.postgres_tiers.values()) if r is not None],
            ),
        )

    def _scrape_sources(self, config: StackConfig) -> pulumi.Input[list[str]]:
        """Who may scrape the mail hosts' exporters: the monitoring VPS; in a dev stack without one the
        devenv Prometheus's address on the podman bridge; else nothing (ports closed)."""
        if self.monitoring_node is not None:
            return self.monitoring_node.apply(lambda n: [str(n["ip"])])
        source = _devenv_address(config, "PENGUINMAILS_PROMETHEUS_SCRAPE_SOURCE", "monitoring")
        return [source] if source else []

    def _prometheus_url(self, config: StackConfig) -> str | None:
        """The Prometheus the warm-up job reads delivery figures from: the monitoring VPS's own (the exporter
        runs beside it), the devenv's in a dev stack, else ``monitoring.prometheus_url`` (none: no job)."""
        if self.monitoring_node is not None:
            return MONITORING_PROMETHEUS_URL
        if config.environment == "dev":
            return os.environ.get("PENGUINMAILS_PROMETHEUS_URL") or config.monitoring.prometheus_url
        return config.monitoring.prometheus_url

    def _routes_url(self, config: StackConfig) -> pulumi.Input[str] | None:
        """Where the hosts reach the exporter's routes endpoint: the monitoring VPS; the devenv exporter on
        the podman bridge in a dev stack without one; else none (no agent, no quarantine routing on the
        hosts: the OLTP marks and the alert still happen)."""
        if self.monitoring_node is not None:
            return self.monitoring_node.apply(lambda n: monitoring_routes_url(str(n["ip"])))
        if config.environment != "dev":
            pulumi.log.warn(
                "reputation: no monitoring host (monitoring.deploy is not vps), so the mail hosts get no sender "
                "routes agent and a quarantined IP keeps sending until its domains are moved by hand"
            )
            return None
        return _devenv_address(config, "PENGUINMAILS_SENDER_ROUTES_URL", "reputation")

    def _exporter_config(self, config: StackConfig) -> pulumi.Output[dict]:
        """The penguinmails exporter's sources (a secret: database and Redis passwords)."""
        queue_tier = self.postgres_tiers.get("queue")
        oltp_tier = self.postgres_tiers.get("oltp")
        stack_config = pulumi.Config("penguinmails")
        secrets = {k.secret: stack_config.require_secret(k.secret) for k in config.reputation.query_keys}
        inventory = self.fleet.inventory if self.fleet is not None else []
        namespace = namespace_for(config.redis.key_prefixes[0], default_prefix(pulumi.get_stack()))
        parts = {
            "inventory": inventory,
            "worker_url": queue_tier.worker_url if queue_tier is not None else None,
            "oltp_url": oltp_tier.reputation_url if oltp_tier is not None else None,
            "redis_url": self.redis_url,
            "secrets": pulumi.Output.all(**secrets) if secrets else {},
            "dns": self.mail_dns.verification if self.mail_dns is not None else [],
            "routes_token": self.routes_token,
            "warmup_url": oltp_tier.warmup_url if oltp_tier is not None and config.warmup.enabled else None,
            "retention_urls": pulumi.Output.all(
                **{t: tier.readonly_url for t, tier in self.postgres_tiers.items() if t in RETAINED_TIERS}
            )
            if any(t in RETAINED_TIERS for t in self.postgres_tiers)
            else {},
            "replicas": [
                pulumi.Output.all(
                    tier, tier_.readonly_replica_url, self.postgres_hosts[tier].ca_certificate
                ).apply(lambda v: {"tier": v[0], "url": v[1], "ca_certificate": v[2]})
                for tier, tier_ in self.postgres_tiers.items()
                if tier_.readonly_replica_url is not None
            ],
        }
        settings = pulumi.Output.secret(
            pulumi.Output.all(**parts).apply(
                lambda v: exporter_settings(
                    stack=pulumi.get_stack(),
                    environment=config.environment,
                    reputation=config.reputation,
                    resolvers=config.dns.resolvers,
                    sending_ips=[ip for n in v["inventory"] for ip in sending_addresses(n)],
                    queue={"worker_url": v["worker_url"], "redis_url": v["redis_url"], "namespace": namespace}
                    if v["worker_url"]
                    else None,
                    oltp_url=v["oltp_url"],
                    query_secrets=v["secrets"],
                    dns_verification=v["dns"],
                    dns_ca_file=None if self.monitoring_node is not None else ca_file_for(config),
                    routes_token=v["routes_token"],
                    warmup={
                        "warmup_url": v["warmup_url"],
                        "prometheus_url": self._prometheus_url(config),
                        "warmup_plan": config.warmup.plan.model_dump(mode="json"),
                        "warmup_start_day": warmup_start_day(config),
                    },
                    retention_urls=v["retention_urls"],
                    replicas=v["replicas"],
                )
            )
        )
        # The devenv exporter reads each stanza's pgBackRest files (backup age and last result).
        backups = pulumi.Output.all(*[pulumi.Output.all(b.stanza, b.work_dir) for b in self.backup_stanzas])
        return pulumi.Output.all(settings, backups).apply(lambda v: {**v[0], **_with_backups(v[1])})

    def _fleet_tier_inputs(self, tier: str) -> dict:
        """A fleet tier's admin server and replica address for :class:`PostgresTier`; none for the others."""
        host = self.postgres_hosts.get(tier)
        if host is None:
            return {}
        return {"server": host.server, "replica_host": host.replica_address}

    def _postgres_vps(
        self, name: str, tier: str, tier_config: PostgresTierConfig, config: StackConfig, child
    ) -> PostgresHost:
        """A tier on its own VPS (mode fleet): ordered like a fleet node (``replicas: 1`` orders a second node
        as its streaming replica), TLS from a CA of its own (the ``postgres_<tier>_ca_certificate``
        output), converged with the postgresql role. Only ``vps.allowed_networks`` may log in; a dev stack
        adds this machine's address on the podman bridge (the controller running the providers)."""
        vps = tier_config.vps
        assert vps is not None  # the config model requires it for mode: fleet
        if vps.name_pattern == type(vps).model_fields["name_pattern"].default:
            # The default names the tier (pg-oltp-01), so two fleet tiers never order the same host name;
            # the replica is pg-oltp-r01.
            vps = vps.model_copy(update={"name_pattern": f"pg-{tier}-{{index:02d}}"})
        fleet = VpsFleet(f"{name}-postgres-{tier}-vps", vps, opts=child)
        primary = fleet.inventory.apply(lambda inventory: inventory[0])
        replica = None
        if vps.replicas:
            replica_vps = vps.model_copy(
                update={"name_pattern": vps.name_pattern.replace("{index", "r{index")}
            )
            replica_fleet = VpsFleet(f"{name}-postgres-{tier}-replica-vps", replica_vps, opts=child)
            replica = replica_fleet.inventory.apply(lambda inventory: inventory[0])
        nodes = pulumi.Output.all(primary, replica).apply(lambda v: [n for n in v if n])
        ca = PrivateCa(
            f"{name}-postgres-{tier}-ca",
            common_name=f"penguinmails {pulumi.get_stack()} postgres {tier} CA",
            opts=child,
        )
        cert = ServerCertificate(
            f"{name}-postgres-{tier}-cert",
            ca,
            dns_names=nodes.apply(lambda ns: [n["fqdn"] for n in ns if n.get("fqdn")]),
            ip_addresses=nodes.apply(lambda ns: [n["ip"] for n in ns]),
            opts=child,
        )
        admin = GeneratedSecret(f"{name}-postgres-{tier}-admin-password", length=40, opts=child)
        replication = (
            GeneratedSecret(f"{name}-postgres-{tier}-replication-password", length=40, opts=child).result
            if vps.replicas
            else None
        )
        networks = list(vps.allowed_networks)
        source = _devenv_address(config, "PENGUINMAILS_PROMETHEUS_SCRAPE_SOURCE", f"postgres.{tier}")
        if source and f"{source}/32" not in networks:
            networks.append(f"{source}/32")
        dev = config.environment == "dev"
        backup = fleet_backup.backup_vars(config.postgres.backup, tier, dev=dev)
        host = PostgresHost(
            f"{name}-postgres-{tier}-host",
            primary=primary,
            replica=replica,
            admin_password=admin.result,
            replication_password=replication,
            tls_certificate=cert.cert_pem,
            tls_private_key=cert.key_pem,
            tls_ca_certificate=ca.cert_pem,
            allowed_networks=networks,
            port=vps.port,
            memory_mb=vps.memory_mb,
            max_connections=vps.max_connections,
            archive_command=vps.archive_command,
            backup=backup,
            backup_secrets=fleet_backup.backup_secrets(dev=dev) if backup else None,
            connection={"host_key_checking": "off" if dev else "accept-new"},
            opts=child,
        )
        return host

    def _redis_vps(self, name: str, config: StackConfig, queue_password, child) -> tuple[pulumi.Output, int]:
        """The queue's Redis on its own VPS: ordered like a fleet node, TLS from the stack's CA (clients
        verify with the ``redis_ca_certificate`` output), converged with the redis role, whose ACL file
        holds the queue user (so no RedisUser is declared for it)."""
        vps = config.redis.vps
        assert vps is not None  # the config model requires it for deploy: vps
        fleet = VpsFleet(f"{name}-redis-vps", vps, opts=child)
        node = fleet.inventory.apply(lambda inventory: inventory[0])
        ca = PrivateCa(
            f"{name}-redis-ca", common_name=f"penguinmails {pulumi.get_stack()} redis CA", opts=child
        )
        cert = ServerCertificate(
            f"{name}-redis-cert",
            ca,
            dns_names=node.apply(lambda n: [n["fqdn"]] if n.get("fqdn") else []),
            ip_addresses=node.apply(lambda n: [n["ip"]]),
            opts=child,
        )
        admin = GeneratedSecret(f"{name}-redis-admin-password", length=40, opts=child)
        dev = config.environment == "dev"
        self.redis_host = RedisHost(
            f"{name}-redis",
            host=node,
            admin_password=admin.result,
            queue_user=config.redis.queue_user,
            queue_password=queue_password,
            key_prefixes=config.redis.key_prefixes,
            tls_certificate=cert.cert_pem,
            tls_private_key=cert.key_pem,
            tls_ca_certificate=ca.cert_pem,
            tls_port=vps.tls_port,
            maxmemory=vps.maxmemory,
            connection={"host_key_checking": "off" if dev else "accept-new"},
            opts=child,
        )
        self.redis_ca_certificate = ca.cert_pem
        return self.redis_host.address, vps.tls_port
