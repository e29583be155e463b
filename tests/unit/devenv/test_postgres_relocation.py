"""The devenv PostgreSQL in a checkout the postgres user cannot reach (a clone in a `mktemp -d` folder)."""

from __future__ import annotations

from pathlib import Path

from devenv import postgres


def test_a_checkout_under_a_private_folder_keeps_the_server_files_in_the_postgres_users_home(
    tmp_path, monkeypatch
):
    private = tmp_path / "private"
    (private / "clone" / ".devenv").mkdir(parents=True)
    private.chmod(0o700)
    monkeypatch.setattr(postgres, "RELOCATED_ROOT", tmp_path / "relocated")
    service = postgres.PostgresService(root=private / "clone" / ".devenv")
    assert service.server_dir.parent == tmp_path / "relocated"
    assert service.data_dir == service.server_dir / "data"
    assert service.pid_file.is_relative_to(service.server_dir)
    # A second checkout gets a folder of its own; the same checkout always the same one.
    other = postgres.PostgresService(root=private / "other" / ".devenv")
    assert other.server_dir != service.server_dir
    assert postgres.PostgresService(root=private / "clone" / ".devenv").server_dir == service.server_dir
    # The checkout's folders are not opened up to other users for it.
    assert private.stat().st_mode & 0o777 == 0o700
    service.server_dir.mkdir(parents=True)
    service.discard()
    assert not service.server_dir.exists()


def test_a_reachable_checkout_keeps_the_server_files_in_the_service_folder(tmp_path, monkeypatch):
    # Every folder above .devenv searchable by others: nothing moves.
    monkeypatch.setattr(Path, "stat", _searchable(Path.stat))
    service = postgres.PostgresService(root=tmp_path / "clone" / ".devenv")
    assert service.server_dir == service.dir
    service.discard()  # nothing relocated: nothing removed
    assert service.dir.exists()


def _searchable(stat):
    class Searchable:
        def __init__(self, real):
            self._real = real
            self.st_mode = real.st_mode | 0o001

        def __getattr__(self, name):
            return getattr(self._real, name)

    return lambda self, *a, **k: Searchable(stat(self, *a, **k))
