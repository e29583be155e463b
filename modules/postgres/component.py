"""One PostgreSQL tier as a component: roles, database, extensions, migrations, and the app's URL.

Roles of a tier (``<prefix>_<tier>_<role>``):

* ``migrator`` owns the database and every object (it runs the migrations through ``SET ROLE``); it is
  under RLS like everyone else, because every tenant table is ``FORCE ROW LEVEL SECURITY``.
* ``app`` logs in, is not the owner and not a member of it, never BYPASSRLS, and holds only DML on the
  tenant tables, SELECT on shared reference tables and EXECUTE on the functions it calls.
* ``readonly`` logs in for reporting: SELECT only, still under RLS, read-only transactions by default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi

from modules.config.model import PostgresTierConfig
from modules.postgres.client import connection_url
from modules.postgres.resources import Database, Extension, Role, SchemaMigrations

SEARCH_PATH = "app, platform, public"
APP_GRANTS = [
    {"on": "schema", "schema": "app", "privileges": ["USAGE"]},
    {"on": "schema", "schema": "platform", "privileges": ["USAGE"]},
    {"on": "schema", "schema": "app_private", "privileges": ["USAGE"]},
    {"on": "tables", "schema": "app", "privileges": ["DELETE", "INSERT", "SELECT", "UPDATE"]},
    {"on": "sequences", "schema": "app", "privileges": ["SELECT", "USAGE"]},
    {"on": "functions", "schema": "app", "privileges": ["EXECUTE"]},
    {"on": "functions", "schema": "app_private", "privileges": ["EXECUTE"]},
    {"on": "tables", "schema": "platform", "privileges": ["SELECT"]},
]
READONLY_GRANTS = [
    {"on": "schema", "schema": "app", "privileges": ["USAGE"]},
    {"on": "schema", "schema": "platform", "privileges": ["USAGE"]},
    {"on": "schema", "schema": "app_private", "privileges": ["USAGE"]},
    {"on": "tables", "schema": "app", "privileges": ["SELECT"]},
    {"on": "functions", "schema": "app_private", "privileges": ["EXECUTE"]},
    {"on": "tables", "schema": "platform", "privileges": ["SELECT"]},
]
APP_SETTINGS = {
    "search_path": SEARCH_PATH,
    "statement_timeout": "30s",
    "lock_timeout": "10s",
    "idle_in_transaction_session_timeout": "60s",
}
READONLY_SETTINGS = {
    "search_path": SEARCH_PATH,
    "statement_timeout": "60s",
    "idle_in_transaction_session_timeout": "60s",
    "default_transaction_read_only": "on",
}
EXTENSIONS = {"oltp": ["citext", "pgcrypto"], "content": [], "analytics": [], "queue": []}
CONNECTION_LIMITS = {"migrator": 10, "app": 100, "readonly": 20}


@dataclass(frozen=True)
class TierNames:
    database: str
    migrator: str
    app: str
    readonly: str


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
    )


class PostgresTier(pulumi.ComponentResource):
    """A tier database with its three roles and applied migrations; ``app_url`` is a secret output."""

    def __init__(
        self,
        name: str,
        tier: str,
        config: PostgresTierConfig,
        passwords: Mapping[str, pulumi.Input[str]],
        prefix: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
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
                opts=pulumi.ResourceOptions(parent=self, protect=protect),
            )
            ready.append(self.database)
        self.extensions = [
            Extension(
                f"{name}-ext-{extension}",
                tier=tier,
                database=names.database,
                extension=extension,
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
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*ready, *self.extensions], protect=protect),
        )
        after_schema = pulumi.ResourceOptions(parent=self, depends_on=[self.migrations])
        self.app = Role(
            f"{name}-app",
            tier=tier,
            role=names.app,
            password=passwords["app"],
            connection_limit=CONNECTION_LIMITS["app"],
            settings=APP_SETTINGS,
            database=names.database,
            database_privileges=["CONNECT"],
            grants=APP_GRANTS,
            grantor=self.migrator.role,
            opts=after_schema,
        )
        self.readonly = Role(
            f"{name}-readonly",
            tier=tier,
            role=names.readonly,
            password=passwords["readonly"],
            connection_limit=CONNECTION_LIMITS["readonly"],
            settings=READONLY_SETTINGS,
            database=names.database,
            database_privileges=["CONNECT"],
            grants=READONLY_GRANTS,
            grantor=self.migrator.role,
            opts=after_schema,
        )

        def url(user: str, password: pulumi.Input[str]) -> pulumi.Output[str]:
            return pulumi.Output.secret(
                pulumi.Output.all(user, password).apply(
                    lambda args: connection_url(
                        args[0], args[1], config.host, config.port, names.database, config.sslmode
                    )
                )
            )

        self.app_url = url(self.app.role, passwords["app"])
        self.readonly_url = url(self.readonly.role, passwords["readonly"])
        self.register_outputs(
            {
                "database": names.database,
                "app_role": self.app.role,
                "app_url": self.app_url,
                "readonly_url": self.readonly_url,
                "migrations": self.migrations.migrations,
            }
        )
