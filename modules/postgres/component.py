"""One PostgreSQL tier as a component: roles, database, extensions, migrations, and the app's URL.

Roles of a tier (``<prefix>_<tier>_<role>``):

* ``migrator`` owns the database and every object (it runs the migrations through ``SET ROLE``); it is
  under RLS like everyone else, because every tenant table is ``FORCE ROW LEVEL SECURITY``.
* ``app`` logs in, is not the owner and not a member of it, never BYPASSRLS, and holds only DML on the
  tenant tables, SELECT on shared reference tables and EXECUTE on the functions it calls.
* ``readonly`` logs in for reporting: SELECT only, still under RLS, read-only transactions by default.
* ``worker`` (queue tier only) logs in for the queue workers: EXECUTE on the ``worker`` functions, no table.
* ``reputation`` (oltp tier only) logs in for the DNSBL checker: EXECUTE on the ``reputation`` functions.
* ``warmup`` (oltp tier only) logs in for the IP warm-up job and CLI: EXECUTE on the ``warmup`` functions.

What each duty may do in each tier is :mod:`modules.postgres.duties`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

import pulumi

from modules.config.model import PostgresTierConfig
from modules.postgres.client import connection_url
from modules.postgres.duties import CONNECTION_LIMITS, duties_for, grants_for, settings_for
from modules.postgres.maintenance import MAINTAINED_TIERS
from modules.postgres.pooler import POOL_SIZES, PoolerDatabase, PoolerDatabaseArgs
from modules.postgres.resources import Database, Extension, Role, SchemaMigrations
from modules.postgres.retention import RETAINED_TIERS, RetentionSchedule, RetentionScheduleArgs
from modules.postgres.schedule import MaintenanceSchedule, MaintenanceScheduleArgs

EXTENSIONS = {"oltp": ["citext", "pgcrypto"], "content": [], "analytics": [], "queue": []}


@dataclass(frozen=True)
class TierNames:
    database: str
    migrator: str
    app: str
    readonly: str
    worker: str
    reputation: str
    warmup: str


def default_prefix(stack: str) -> str:
    """``pm_<stack>``: two stacks (dev and a test stack) can share one server without clashing."""
    slug = re.sub(r"[^a-z0-9]+", "_", stack.lower()).strip("_") or "stack"
    return f"pm_{slug}"[:30].rstrip("_")


def tier_names(tier: str, config: PostgresTierConfig, prefix: str) -> TierNames:
    prefix = config.name_prefix or prefix
    return TierNames(
        database=config.database or f"{prefix}_{tier}",
        migrator=f"{prefix}_{tier}_migrator",
        app=f"{prefix}_{tier}_app",
        readonly=f"{prefix}_{tier}_readonly",
        worker=f"{prefix}_{tier}_worker",
        reputation=f"{prefix}_{tier}_reputation",
        warmup=f"{prefix}_{tier}_warmup",
    )


class PostgresTier(pulumi.ComponentResource):
    """A tier database with its roles and applied migrations; ``app_url`` (and the queue's ``worker_url``)
    are secret outputs."""

    def __init__(
        self,
        name: str,
        tier: str,
        config: PostgresTierConfig,
        passwords: Mapping[str, pulumi.Input[str]],
        prefix: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
        pooler_ca_file: str | None = None,
        server: pulumi.Input[dict] | None = None,
        replica_host: pulumi.Input[str] | None = None,
    ):
        """``pooler_ca_file``: the pooler's CA (the devenv's, on a dev stack); with it the pooled URLs verify
        the pooler (``sslmode=verify-full``), without it they only require TLS.

        ``server`` (secret: host, port, user, password, sslmode, sslrootcert PEM) is the admin connection
        of a tier on a fleet VPS (:class:`modules.ansible.postgres_host.PostgresHost`); every resource gets
        it as a secret input and the URLs point at its host. ``replica_host`` adds ``readonly_replica_url``."""
        super().__init__("penguinmails:postgres:Tier", name, None, opts)
        self.names = names = tier_names(tier, config, prefix or default_prefix(pulumi.get_stack()))
        child = pulumi.ResourceOptions(parent=self)
        # A server's database holds production data: destroying it needs an explicit unprotect first.
        protect = config.mode == "server"

        self.migrator = Role(
            f"{name}-migrator",
            tier=tier,
            role=names.migrator,
            password=passwords["migrator"],
            connection_limit=CONNECTION_LIMITS["migrator"],
            # An existing database (hosted server) is not ours to own: the migrator gets the rights it needs.
            database=None if config.create_database else names.database,
            database_privileges=None if config.create_database else ["CONNECT", "CREATE", "TEMPORARY"],
            server=server,
            opts=child,
        )
        ready: list[pulumi.Resource] = [self.migrator]
        self.database: Database | None = None
        if config.create_database:
            self.database = Database(
                f"{name}-database",
                tier=tier,
                database=names.database,
                owner=self.migrator.role,
                server=server,
                opts=pulumi.ResourceOptions(parent=self, protect=protect),
            )
            ready.append(self.database)
        self.extensions = [
            Extension(
                f"{name}-ext-{extension}",
                tier=tier,
                database=names.database,
                extension=extension,
                server=server,
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(ready)),
            )
            for extension in EXTENSIONS.get(tier, [])
        ]
        self.migrations = SchemaMigrations(
            f"{name}-migrations",
            tier=tier,
            database=names.database,
            owner=self.migrator.role,
            directory=f"schemas/{tier}",
            actor=f"pulumi:{pulumi.get_project()}/{pulumi.get_stack()}",
            server=server,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*ready, *self.extensions], protect=protect),
        )
        after_schema = pulumi.ResourceOptions(parent=self, depends_on=[self.migrations])
        # Partition maintenance (future partitions ahead, old ones dropped by retention) every hour, in UTC.
        self.schedule: MaintenanceSchedule | None = None
        if tier in MAINTAINED_TIERS and config.partition_schedule == "pg_cron":
            self.schedule = MaintenanceSchedule(
                f"{name}-partition-schedule",
                MaintenanceScheduleArgs(
                    tier=tier, database=names.database, username=self.migrator.role, server=server
                ),
                opts=after_schema,
            )
        # Row retention (history rows past data_retention_days) once a day.
        self.retention_schedule: RetentionSchedule | None = None
        if tier in RETAINED_TIERS and config.retention_schedule == "pg_cron":
            self.retention_schedule = RetentionSchedule(
                f"{name}-retention-schedule",
                RetentionScheduleArgs(
                    tier=tier,
                    database=names.database,
                    username=self.migrator.role,
                    days=config.retention_days(tier),
                    server=server,
                ),
                opts=after_schema,
            )

        def login_role(duty: str) -> Role:
            # Declared after the migrations: the grants name schemas the migrations create.
            return Role(
                f"{name}-{duty}",
                tier=tier,
                role=getattr(names, duty),
                password=passwords[duty],
                connection_limit=CONNECTION_LIMITS[duty],
                settings=settings_for(duty),
                database=names.database,
                database_privileges=["CONNECT"],
                grants=grants_for(tier, duty),
                grantor=self.migrator.role,
                server=server,
                opts=after_schema,
            )

        duties = duties_for(tier)
        self.app = login_role("app")
        self.readonly = login_role("readonly")
        self.worker = login_role("worker") if "worker" in duties else None
        self.reputation = login_role("reputation") if "reputation" in duties else None
        self.warmup = login_role("warmup") if "warmup" in duties else None

        # Where the URLs point: the config's server, or the fleet VPS (verify-full against the stack's CA).
        endpoint: pulumi.Input[list] = [config.host, config.port, config.sslmode]
        if server is not None:
            endpoint = pulumi.Output.from_input(server).apply(lambda s: [s["host"], s["port"], s["sslmode"]])

        def url(
            user: str, password: pulumi.Input[str], at: pulumi.Input[list] = endpoint
        ) -> pulumi.Output[str]:
            return pulumi.Output.secret(
                pulumi.Output.all(user, password, at).apply(
                    lambda args: connection_url(
                        args[0], args[1], args[2][0], args[2][1], names.database, args[2][2]
                    )
                )
            )

        self.app_url = url(self.app.role, passwords["app"])
        self.readonly_url = url(self.readonly.role, passwords["readonly"])
        self.worker_url = url(self.worker.role, passwords["worker"]) if self.worker is not None else None
        self.reputation_url = (
            url(self.reputation.role, passwords["reputation"]) if self.reputation is not None else None
        )
        self.warmup_url = url(self.warmup.role, passwords["warmup"]) if self.warmup is not None else None
        # The streaming replica (fleet tiers with replicas: 1): the readonly role, read-only by the standby.
        self.readonly_replica_url: pulumi.Output[str] | None = None
        if replica_host is not None and server is not None:
            at_replica = pulumi.Output.all(replica_host, endpoint).apply(lambda v: [v[0], v[1][1], v[1][2]])
            self.readonly_replica_url = url(self.readonly.role, passwords["readonly"], at_replica)
        # PgBouncer in front of a local tier: pooled URLs for the tenant-facing roles (transaction mode, so
        # no session state; the direct URLs above stay for migrations, advisory locks and LISTEN).
        self.pooler: PoolerDatabase | None = None
        self.app_pooled_url: pulumi.Output[str] | None = None
        self.readonly_pooled_url: pulumi.Output[str] | None = None
        if config.pooling and config.mode == "local":
            self.pooler = PoolerDatabase(
                f"{name}-pooler",
                PoolerDatabaseArgs(
                    tier=tier,
                    database=names.database,
                    role_prefix=names.app.removesuffix("app"),
                    pool_size=config.pool_size or POOL_SIZES[tier],
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.app, self.readonly]),
            )

            def pooled(user: str, password: pulumi.Input[str]) -> pulumi.Output[str]:
                # The pooler requires TLS 1.3; with its CA known, clients verify it too.
                def url(args: list) -> str:
                    sslmode = "verify-full" if pooler_ca_file else "require"
                    text = connection_url(
                        args[0], args[1], config.host, config.pool_port, names.database, sslmode
                    )
                    return f"{text}&sslrootcert={quote(pooler_ca_file, safe='/')}" if pooler_ca_file else text

                return pulumi.Output.secret(pulumi.Output.all(user, password, self.pooler.id).apply(url))

            self.app_pooled_url = pooled(self.app.role, passwords["app"])
            self.readonly_pooled_url = pooled(self.readonly.role, passwords["readonly"])
        outputs = {
            "database": names.database,
            "app_role": self.app.role,
            "app_url": self.app_url,
            "readonly_url": self.readonly_url,
            "migrations": self.migrations.migrations,
        }
        if self.app_pooled_url is not None:
            outputs["app_pooled_url"] = self.app_pooled_url
            outputs["readonly_pooled_url"] = self.readonly_pooled_url
        if self.worker_url is not None:
            outputs["worker_url"] = self.worker_url
        if self.reputation_url is not None:
            outputs["reputation_url"] = self.reputation_url
        if self.warmup_url is not None:
            outputs["warmup_url"] = self.warmup_url
        if self.readonly_replica_url is not None:
            outputs["readonly_replica_url"] = self.readonly_replica_url
        self.register_outputs(outputs)
