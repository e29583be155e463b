"""The tenant isolation suite (tests/integration/test_postgres_isolation.py), every case, through PgBouncer.

The same tests, collected here with a ``tiers`` fixture whose tenant-facing (and worker) roles log in
through the devenv pooler (transaction mode, a small pool of 3 per role) instead of straight to the
server; the admin's and the migrator's connections stay direct, as the stack's do.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.test_postgres_isolation import *  # noqa: F403 - the suite, re-collected here
from tests.integration.test_postgres_isolation import TIERS
from tests.support import pooler as support
from tests.support.postgres import TierDb


@pytest.fixture(scope="module")
def tiers(devenv_env) -> Iterator[dict[str, TierDb]]:
    yield from support.pooled_tiers(TIERS)
