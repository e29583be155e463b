"""PostgreSQL databases, roles with grants, extensions and schema migrations as Pulumi dynamic resources.

The providers only map resource properties onto :mod:`modules.postgres.admin` and
:mod:`modules.postgres.migrations`. The admin connection comes from the stack config
(and on a dev stack the devenv's variables; see :func:`modules.postgres.client.server_target`), chosen by
the resource's ``tier``; only a tier on a fleet VPS passes it as the secret ``server`` input, since its
address is known only once the VPS exists.

Drift: ``read`` (run by ``pulumi refresh``) compares the server with the state and reports what differs in
the ``drift`` output (always ``[]`` as an input), so the next preview shows an update whose diff lists the
problems, and ``pulumi up`` puts things back. For migrations, ``migrations`` after a refresh is the ledger,
so a preview lists the files still to apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi.dynamic as dynamic

from modules.config.model import TIERS
from modules.errors import ToolkitError
from modules.postgres import admin
from modules.postgres import migrations as mig
from modules.postgres.client import MAINTENANCE_DB, PostgresError, ServerTarget, connect, run, server_target
from modules.providers import ProviderSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD_DRIFT = "(changed outside Pulumi)"  # noqa: S105 - a marker, not a password


def _check_common(news: dict[str, Any], names: tuple[str, ...]) -> list[dynamic.CheckFailure]:
    failures = []
    if news.get("tier") not in TIERS:
        failures.append(
            dynamic.CheckFailure("tier", f"must be one of {', '.join(TIERS)}, got {news.get('tier')!r}")
        )
    for key in names:
        value = news.get(key)
        problem = admin.database_name_problem(value) if key == "database" else admin.name_problem(value)
        if problem and not _unknown(value):
            failures.append(dynamic.CheckFailure(key, problem))
    return failures


def _unknown(value: Any) -> bool:
    """True for the placeholder the engine passes during a preview for values not known yet."""
    from pulumi.runtime import rpc

    return value == rpc.UNKNOWN


def _changed(olds: dict[str, Any], news: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [key for key in keys if olds.get(key) != news.get(key)]


def _read_result(id_: str, outs: dict[str, Any]) -> dynamic.ReadResult:
    """Refreshed outputs, also stored as the inputs: the next preview then diffs the server's state against
    the program, so ``--diff`` shows exactly what drifted (``- drift: [...]``) or is pending."""
    inputs = {key: value for key, value in outs.items() if not key.startswith("__")}
    return dynamic.ReadResult(id_=id_, outs=outs, inputs=inputs)


class _PostgresProvider(dynamic.ResourceProvider):
    """Shared: the stack config from ``configure()`` and the tier's admin target."""

    def configure(self, req: dynamic.ConfigureRequest) -> None:
        self.settings = ProviderSettings.from_request(req)

    def _target(self, props: dict[str, Any]) -> ServerTarget:
        return server_target(
            getattr(self, "settings", ProviderSettings()), props["tier"], props.get("server")
        )


def with_server(
    props: dict[str, Any], server: pulumi.Input[dict[str, Any]] | None, opts: pulumi.ResourceOptions | None
) -> tuple[dict[str, Any], pulumi.ResourceOptions | None]:
    """Add the explicit admin ``server`` (a tier on a fleet VPS) as a secret input and a secret output.

    Absent for the other tiers, so their inputs (and state) stay as they were.
    """
    if server is None:
        return props, opts
    secret = pulumi.ResourceOptions(additional_secret_outputs=["server"])
    return {**props, "server": pulumi.Output.secret(server)}, pulumi.ResourceOptions.merge(secret, opts)


# ----------------------------------------------------------------------------------------------- Database


class DatabaseProvider(_PostgresProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        return dynamic.CheckResult(news, _check_common(news, ("database", "owner")))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = _changed(olds, news, ("tier", "database", "owner", "drift"))
        replaces = [key for key in changed if key in ("tier", "database")]
        return dynamic.DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=True)

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        target, name = self._target(props), props["database"]
        with connect(target, application_name="penguinmails-database") as conn:
            if run(target, f"read database {name}", lambda: admin.database_get(conn, name)) is not None:
                raise PostgresError(
                    f"Database[{name}]: already exists on {target.label} and is not managed by this "
                    f"stack; drop it, or choose another postgres.{props['tier']}.database or name_prefix"
                )
            run(target, f"CREATE DATABASE {name}", lambda: admin.database_create(conn, name, props["owner"]))
        return dynamic.CreateResult(id_=name, outs={**props, "drift": []})

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        target, name = self._target(news), news["database"]
        with connect(target, application_name="penguinmails-database") as conn:
            run(
                target,
                f"ALTER DATABASE {name} OWNER",
                lambda: admin.database_set_owner(conn, name, news["owner"]),
            )
            run(target, f"REVOKE ON DATABASE {name}", lambda: admin.database_restrict(conn, name))
        return dynamic.UpdateResult(outs={**news, "drift": []})

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        target = self._target(props)
        with connect(target, application_name="penguinmails-database") as conn:
            live = run(target, f"read database {id_}", lambda: admin.database_get(conn, id_))
        if live is None:
            return dynamic.ReadResult(id_="", outs={})
        drift = []
        if live["owner"] != props.get("owner"):
            drift.append(f"database {id_} is owned by {live['owner']}, not {props.get('owner')}")
        if live["public_connect"]:
            drift.append(f"PUBLIC may connect to database {id_} (every role of the server could)")
        return _read_result(id_, {**props, "drift": drift})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        target = self._target(props)
        with connect(target, application_name="penguinmails-database") as conn:
            run(target, f"DROP DATABASE {id_}", lambda: admin.database_drop(conn, id_))


class Database(dynamic.Resource, module="postgres", name="Database"):
    """A database owned by the tier's migrator role; PUBLIC cannot connect to it."""

    database: pulumi.Output[str]
    owner: pulumi.Output[str]
    drift: pulumi.Output[list]

    def __init__(
        self,
        resource_name: str,
        *,
        tier: str,
        database: str,
        owner: pulumi.Input[str],
        server: pulumi.Input[dict[str, Any]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {"tier": tier, "database": database, "owner": owner, "drift": []}
        props, opts = with_server(props, server, opts)
        super().__init__(DatabaseProvider(), resource_name, props, opts)


# ---------------------------------------------------------------------------------------------- Extension


class ExtensionProvider(_PostgresProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        return dynamic.CheckResult(news, _check_common(news, ("database", "extension", "schema")))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = _changed(olds, news, ("tier", "database", "extension", "schema", "drift"))
        replaces = [key for key in changed if key != "drift"]
        return dynamic.DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=True)

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        target, name, database = self._target(props), props["extension"], props["database"]
        with connect(target, database, application_name="penguinmails-extension") as conn:
            if not run(target, "read pg_available_extensions", lambda: admin.extension_available(conn, name)):
                raise PostgresError(
                    f"Extension[{name}]: not available on {target.label} "
                    "(on Debian it comes with postgresql-contrib)"
                )
            if run(target, f"read extension {name}", lambda: admin.extension_get(conn, name)) is not None:
                raise PostgresError(
                    f"Extension[{name}]: already installed in {database} and not managed by this stack; "
                    "drop it first (import is not supported)"
                )
            run(
                target,
                f"CREATE EXTENSION {name}",
                lambda: admin.extension_create(conn, name, props["schema"]),
            )
        return dynamic.CreateResult(id_=f"{database}/{name}", outs={**props, "drift": []})

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        # Only drift reaches here (every other change replaces): reinstall if it was dropped.
        target, name = self._target(news), news["extension"]
        with connect(target, news["database"], application_name="penguinmails-extension") as conn:
            if run(target, f"read extension {name}", lambda: admin.extension_get(conn, name)) is None:
                run(
                    target,
                    f"CREATE EXTENSION {name}",
                    lambda: admin.extension_create(conn, name, news["schema"]),
                )
        return dynamic.UpdateResult(outs={**news, "drift": []})

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        target = self._target(props)
        try:
            with connect(target, props["database"], application_name="penguinmails-extension") as conn:
                live = run(target, "read extension", lambda: admin.extension_get(conn, props["extension"]))
        except PostgresError as exc:
            if exc.sqlstate == "3D000":  # the database is gone, and the extension with it
                return dynamic.ReadResult(id_="", outs={})
            raise
        if live is None:
            return dynamic.ReadResult(id_="", outs={})
        drift = [] if live["schema"] == props.get("schema") else [f"extension is in schema {live['schema']}"]
        return _read_result(id_, {**props, "drift": drift})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        target, name = self._target(props), props["extension"]
        try:
            conn = connect(target, props["database"], application_name="penguinmails-extension")
        except PostgresError as exc:
            if exc.sqlstate == "3D000":
                return
            raise
        with conn:
            run(target, f"DROP EXTENSION {name}", lambda: admin.extension_drop(conn, name))


class Extension(dynamic.Resource, module="postgres", name="Extension"):
    """An extension of a tier database, created by the admin (some need superuser rights)."""

    extension: pulumi.Output[str]
    drift: pulumi.Output[list]

    def __init__(
        self,
        resource_name: str,
        *,
        tier: str,
        database: pulumi.Input[str],
        extension: str,
        schema: str = "public",
        server: pulumi.Input[dict[str, Any]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {"tier": tier, "database": database, "extension": extension, "schema": schema, "drift": []}
        props, opts = with_server(props, server, opts)
        super().__init__(ExtensionProvider(), resource_name, props, opts)


# --------------------------------------------------------------------------------------------------- Role


ROLE_KEYS = (
    "tier",
    "role",
    "login",
    "password",
    "connection_limit",
    "settings",
    "database",
    "database_privileges",
    "grants",
    "grantor",
    "drift",
)


class RoleProvider(_PostgresProvider):
    """A login role with exactly the given grants; refresh reports any privilege, flag or password drift."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures = _check_common(news, ("role",))
        for reason in admin.grant_problems(news.get("grants") or []):
            failures.append(dynamic.CheckFailure("grants", reason))
        for reason in admin.settings_problems(news.get("settings") or {}):
            failures.append(dynamic.CheckFailure("settings", reason))
        privileges = news.get("database_privileges") or []
        unknown = sorted(set(privileges) - admin.DATABASE_PRIVILEGES)
        if unknown:
            failures.append(
                dynamic.CheckFailure("database_privileges", f"unknown privilege(s) {', '.join(unknown)}")
            )
        if (news.get("grants") or privileges) and not news.get("database"):
            failures.append(dynamic.CheckFailure("database", "grants need the database they apply to"))
        if news.get("grants") and not news.get("grantor"):
            failures.append(dynamic.CheckFailure("grantor", "grants need the role that owns the objects"))
        limit = news.get("connection_limit", -1)
        if not isinstance(limit, int | float) or int(limit) != limit or limit < -1:
            failures.append(
                dynamic.CheckFailure("connection_limit", "must be -1 (no limit) or a whole number ≥ 0")
            )
        if news.get("login") and not news.get("password"):
            failures.append(dynamic.CheckFailure("password", "a login role needs a password"))
        return dynamic.CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = _changed(olds, news, ROLE_KEYS)
        if "settings" in changed and not _unknown(news.get("settings")):
            if admin.settings_match(news.get("settings") or {}, olds.get("settings") or {}):
                changed.remove("settings")
        replaces = [key for key in changed if key in ("tier", "role")]
        return dynamic.DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=True)

    def _apply_database_side(
        self, target: ServerTarget, props: dict[str, Any], previous: dict[str, Any]
    ) -> None:
        role, database = props["role"], props.get("database")
        if not database:
            return
        with connect(target, application_name="penguinmails-role") as conn:
            run(
                target,
                f"GRANT ON DATABASE {database} TO {role}",
                lambda: admin.database_privileges_set(
                    conn, database, role, props.get("database_privileges") or []
                ),
            )
        if props.get("grants") or previous.get("grants"):
            with connect(target, database, application_name="penguinmails-role") as conn:

                def grant() -> None:
                    with conn.transaction():
                        admin.grants_apply(
                            conn,
                            role,
                            props["grantor"],
                            props.get("grants") or [],
                            previous.get("grants") or [],
                        )

                run(target, f"grants of role {role}", grant)

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        target, role = self._target(props), props["role"]
        password = props.get("password")
        with connect(target, application_name="penguinmails-role") as conn:
            if run(target, f"read role {role}", lambda: admin.role_get(conn, role)) is not None:
                raise PostgresError(
                    f"Role[{role}]: already exists on {target.label} and is not managed by this stack; "
                    f"drop it, or choose another postgres.{props['tier']}.name_prefix"
                )
            run(
                target,
                f"CREATE ROLE {role}",
                lambda: admin.role_create(conn, {**props, "name": role}),
                password,
            )
        self._apply_database_side(target, props, {})
        return dynamic.CreateResult(id_=role, outs={**props, "drift": []})

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        target, role = self._target(news), news["role"]
        with connect(target, application_name="penguinmails-role") as conn:
            run(
                target,
                f"ALTER ROLE {role}",
                lambda: admin.role_update(conn, {**news, "name": role}, olds),
                news.get("password"),
            )
        self._apply_database_side(target, news, olds)
        return dynamic.UpdateResult(outs={**news, "drift": []})

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        target = self._target(props)
        with connect(target, application_name="penguinmails-role") as conn:
            live = run(target, f"read role {id_}", lambda: admin.role_get(conn, id_))
            if live is None:
                return dynamic.ReadResult(id_="", outs={})
            database = props.get("database")
            db_privileges = (
                run(
                    target,
                    "read database privileges",
                    lambda: admin.database_privileges_get(conn, database, id_),
                )
                if database
                else []
            )
            db_exists = bool(database) and admin.database_get(conn, database) is not None
        outs = {**props}
        drift = admin.role_flag_problems(live, bool(props.get("login")))
        wanted_settings = props.get("settings") or {}
        outs["settings"] = (
            wanted_settings if admin.settings_match(wanted_settings, live["settings"]) else live["settings"]
        )
        outs["connection_limit"] = live["connection_limit"]
        if database:
            outs["database_privileges"] = (
                props.get("database_privileges")
                if sorted(props.get("database_privileges") or []) == db_privileges
                else db_privileges
            )
        if props.get("login") and props.get("password"):
            # The tier database when the role may connect there; else the maintenance database (PUBLIC may).
            login_db = database if db_exists else MAINTENANCE_DB
            if admin.password_works(target, id_, props["password"], login_db) is False:
                outs["password"] = PASSWORD_DRIFT
        if props.get("grants") and database:
            if not db_exists:
                drift.append(f"database {database} of the grants does not exist")
            else:
                with connect(target, database, application_name="penguinmails-role") as conn:
                    drift += run(
                        target,
                        f"read privileges of {id_}",
                        lambda: admin.role_problems(conn, id_, props["grantor"], props["grants"]),
                    )
        outs["drift"] = drift
        return _read_result(id_, outs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        target = self._target(props)
        run(target, f"DROP ROLE {id_}", lambda: admin.role_drop(target, id_, props.get("database")))


class Role(dynamic.Resource, module="postgres", name="Role"):
    """A role of a tier: never superuser or BYPASSRLS, and holding exactly ``grants`` in ``database``.

    ``grants`` entries are ``{"on": "schema"|"tables"|"sequences"|"functions", "schema": …, "privileges":
    [...]}``, applied as ``grantor`` (the tier's owner) to existing objects and, through default
    privileges, to those later migrations create.
    """

    role: pulumi.Output[str]
    password: pulumi.Output[str]
    drift: pulumi.Output[list]

    def __init__(
        self,
        resource_name: str,
        *,
        tier: str,
        role: str,
        password: pulumi.Input[str] | None = None,
        login: bool = True,
        connection_limit: int = -1,
        settings: dict[str, str] | None = None,
        database: pulumi.Input[str] | None = None,
        database_privileges: list[str] | None = None,
        grants: list[dict[str, Any]] | None = None,
        grantor: pulumi.Input[str] | None = None,
        server: pulumi.Input[dict[str, Any]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "tier": tier,
            "role": role,
            "password": password,
            "login": login,
            "connection_limit": connection_limit,
            "settings": settings or {},
            "database": database,
            "database_privileges": database_privileges or [],
            "grants": grants or [],
            "grantor": grantor,
            "drift": [],
        }
        props, opts = with_server(props, server, opts)
        secret_opts = pulumi.ResourceOptions(additional_secret_outputs=["password"])
        super().__init__(
            RoleProvider(), resource_name, props, pulumi.ResourceOptions.merge(secret_opts, opts)
        )


# -------------------------------------------------------------------------------------- SchemaMigrations


def _files(directory: str) -> list[mig.MigrationFile]:
    return mig.load_dir(REPO_ROOT / directory)


def _manifest_or_none(directory: Any) -> dict[str, str] | None:
    try:
        return mig.manifest(_files(directory)) if isinstance(directory, str) else None
    except ToolkitError:
        return None


class SchemaMigrationsProvider(_PostgresProvider):
    """Applies ``schemas/<tier>/NNNN_*.sql`` under the advisory lock; refresh reads the ledger and drift."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures = _check_common(news, ("database", "owner"))
        directory = news.get("directory")
        if not isinstance(directory, str) or Path(directory).is_absolute() or ".." in Path(directory).parts:
            failures.append(
                dynamic.CheckFailure("directory", "must be a folder inside the repository, e.g. schemas/oltp")
            )
        else:
            try:
                on_disk = mig.manifest(_files(directory))
            except ToolkitError as exc:
                failures.append(dynamic.CheckFailure("directory", exc.message))
            else:
                if news.get("migrations") != on_disk and not _unknown(news.get("migrations")):
                    failures.append(
                        dynamic.CheckFailure(
                            "migrations", "does not match the files on disk; run the program again"
                        )
                    )
        timeout = news.get("lock_timeout_seconds")
        if not isinstance(timeout, int | float) or not 1 <= timeout <= 3600:
            failures.append(dynamic.CheckFailure("lock_timeout_seconds", "must be between 1 and 3600"))
        return dynamic.CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        applied, wanted = olds.get("migrations") or {}, news.get("migrations") or {}
        # Only when ``news`` are the program's inputs (the files on disk): during a refresh the engine also
        # diffs, with ``news`` being the ledger just read, and a ledger behind the files is not an error.
        from_program = not _unknown(wanted) and wanted == _manifest_or_none(news.get("directory"))
        if from_program and olds.get("database") == news.get("database"):
            problems = [
                f"{name}: applied with sha256 {sha[:12]}…, the file now has {wanted[name][:12]}…"
                for name, sha in sorted(applied.items())
                if name in wanted and wanted[name] != sha
            ]
            problems += [
                f"{name}: applied, but the file is gone" for name in sorted(set(applied) - set(wanted))
            ]
            if problems:
                raise mig.MigrationChecksumMismatch(
                    f"SchemaMigrations[{news.get('database')}]: never edit or delete an applied migration; "
                    "add a new file instead:\n  - " + "\n  - ".join(problems)
                )
        changed = _changed(olds, news, ("tier", "database", "owner", "directory", "migrations", "drift"))
        if from_program and olds and not olds.get("fingerprinted"):
            changed.append("fingerprinted")  # state from before the security fingerprint: apply records it
        if from_program and olds and "rls_coverage" not in olds:
            changed.append("rls_coverage")  # state from before the audit's RLS coverage: apply records it
        replaces = [key for key in changed if key in ("tier", "database")]
        return dynamic.DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=False)

    def _apply(self, props: dict[str, Any]) -> dict[str, Any]:
        target = self._target(props)
        files = _files(props["directory"])
        with connect(
            target, props["database"], application_name=f"penguinmails-migrations {props['actor']}"
        ) as conn:
            result = run(
                target,
                f"migrations of {props['database']}",
                lambda: mig.apply(
                    conn,
                    files,
                    owner=props["owner"],
                    actor=props.get("actor") or "",
                    lock_timeout=float(props["lock_timeout_seconds"]),
                ),
            )
        for name in result.applied:
            pulumi.log.info(f"SchemaMigrations[{props['database']}]: applied {name}")
        for action in result.repaired:
            pulumi.log.warn(f"SchemaMigrations[{props['database']}]: repaired drift: {action}")
        for warning in result.warnings:
            pulumi.log.warn(f"SchemaMigrations[{props['database']}]: {warning}")
        with connect(target, props["database"], application_name="penguinmails-migrations coverage") as conn:
            coverage = run(target, f"RLS coverage of {props['database']}", lambda: mig.rls_coverage(conn))
        return {
            **props,
            "migrations": result.ledger,
            "drift": [],
            "fingerprinted": True,
            "rls_coverage": coverage,
        }

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        return dynamic.CreateResult(id_=props["database"], outs=self._apply(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(outs=self._apply(news))

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        target = self._target(props)
        try:
            conn = connect(target, props["database"], application_name="penguinmails-migrations refresh")
        except PostgresError as exc:
            if exc.sqlstate == "3D000":
                return dynamic.ReadResult(id_="", outs={})
            raise
        with conn:
            found = run(
                target, f"inspect {props['database']}", lambda: mig.inspect(conn, _files(props["directory"]))
            )
            coverage = run(target, f"RLS coverage of {props['database']}", lambda: mig.rls_coverage(conn))
        outs = {**props, "migrations": found.ledger, "drift": found.drift, "rls_coverage": coverage}
        return _read_result(id_, outs)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        # Drops every object the owner role has in this database (the migrated schema and the ledger).
        target = self._target(props)
        try:
            conn = connect(target, props["database"], application_name="penguinmails-migrations destroy")
        except PostgresError as exc:
            if exc.sqlstate == "3D000":
                return
            raise
        with conn:
            run(target, f"DROP OWNED BY {props['owner']}", lambda: admin.drop_owned(conn, props["owner"]))


class SchemaMigrations(dynamic.Resource, module="postgres", name="SchemaMigrations"):
    """The versioned schema of a tier database; ``migrations`` maps each applied file to its sha256."""

    migrations: pulumi.Output[dict]
    drift: pulumi.Output[list]

    def __init__(
        self,
        resource_name: str,
        *,
        tier: str,
        database: pulumi.Input[str],
        owner: pulumi.Input[str],
        directory: str,
        actor: str = "",
        lock_timeout_seconds: int = 60,
        server: pulumi.Input[dict[str, Any]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        files = _files(directory)
        props = {
            "tier": tier,
            "database": database,
            "owner": owner,
            "directory": directory,
            "migrations": mig.manifest(files),
            "drift": [],
            "actor": actor,
            "lock_timeout_seconds": lock_timeout_seconds,
        }
        props, opts = with_server(props, server, opts)
        super().__init__(SchemaMigrationsProvider(), resource_name, props, opts)
