"""Host checks for converged mail hosts, run with testinfra against a real inventory.

They only make sense against a mail host, so they are collected only when ``--hosts`` is given (the
integration tests run them that way, and on-call can too)::

    pytest tests/infra --hosts=ansible://mailhosts --ansible-inventory=ansible/inventory/generated-dev.yml

A plain ``pytest`` run (``make test``) does not collect this folder: against the test machine itself the
checks would be meaningless.
"""

from __future__ import annotations

from pathlib import Path


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    if not config.getoption("hosts", default=None) and collection_path.name.startswith("test_"):
        return True
    return None
