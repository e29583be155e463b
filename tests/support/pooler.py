"""Put throw-away tier databases behind the devenv PgBouncer, as the stack's ``PoolerDatabase`` does.

:func:`pool` installs the lookup function, grants the auth role CONNECT, writes the pooler's entry (under an
alias of the test's choosing, so one database can have pools of different sizes) and reloads; afterwards the
tier's login roles connect through the pooler (see ``TierDb.connect``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from modules.postgres import admin
from modules.postgres import pooler as pgb
from modules.postgres.client import ServerTarget, connect
from modules.providers import ProviderSettings
from tests.support.postgres import TierDb


def target() -> pgb.PoolerTarget:
    return pgb.pooler_target(ProviderSettings())


def client_target(pooler: pgb.PoolerTarget) -> ServerTarget:
    return ServerTarget(pooler.host, pooler.port, "nobody", None, sslmode="require")


def ca_file() -> Path:
    return Path(os.environ[pgb.ENV_CA_FILE])


def install(db: TierDb, pooler: pgb.PoolerTarget) -> None:
    with connect(db.target) as conn:
        admin.database_privileges_set(conn, db.database, pooler.auth_user, ["CONNECT"])
    with db.connect() as conn:
        pgb.install_lookup(conn, f"{db.prefix}_{db.tier}_", pooler.auth_user)


@contextmanager
def pool(
    db: TierDb, pool_size: int = 2, alias: str | None = None, pooler: pgb.PoolerTarget | None = None
) -> Iterator[TierDb]:
    """``db`` with its login roles going through the pooler's ``alias`` (default: the database's name)."""
    pooler = pooler or target()
    alias = alias or db.database
    install(db, pooler)
    pgb.set_entry(
        pooler, alias, pgb.entry_line(alias, db.target.host, db.target.port, db.database, pool_size)
    )
    try:
        yield replace(db, pooled=client_target(pooler), pooled_alias=alias)
    finally:
        pgb.set_entry(pooler, alias, None)


def pooled_tiers(tiers: tuple[str, ...], pool_size: int = 3) -> Iterator[dict[str, TierDb]]:
    """Fresh tier databases with tenants A and B whose tenant-facing roles log in through the pooler (the
    admin's and the migrator's connections stay direct); torn down afterwards. For a module fixture."""
    from contextlib import ExitStack

    from tests.support.postgres import provision, seed_tenants, teardown
    from tests.support.rls import TENANT_A, TENANT_B

    created: dict[str, TierDb] = {}
    with ExitStack() as stack:
        try:
            for tier in tiers:
                created[tier] = provision(tier)
                seed_tenants(created[tier], [TENANT_A, TENANT_B])
            yield {tier: stack.enter_context(pool(db, pool_size=pool_size)) for tier, db in created.items()}
        finally:
            stack.close()
            for db in created.values():
                teardown(db)
