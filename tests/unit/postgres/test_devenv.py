"""The devenv PostgreSQL's configuration, written into a scratch folder (no server started)."""

from __future__ import annotations

import os
import pwd

from devenv import postgres as devenv_postgres
from devenv.postgres import POSTGRES_PORT, PostgresService


def test_config_is_loopback_only_scram_and_written_once(tmp_path, monkeypatch):
    # pytest's tmp folders are private (0700): the server's files are then relocated, here into tmp_path too.
    monkeypatch.setattr(devenv_postgres, "RELOCATED_ROOT", tmp_path / "relocated")
    service = PostgresService(root=tmp_path)
    service.data_dir.mkdir(parents=True)
    (service.data_dir / "postgresql.conf").write_text("# initdb's file\n")
    me = pwd.getpwuid(os.getuid())
    service._write_config(me)
    service._write_config(me)  # a restart rewrites ours and includes it once
    main = (service.data_dir / "postgresql.conf").read_text()
    assert main.count("include_if_exists = 'penguinmails.conf'") == 1
    ours = (service.data_dir / "penguinmails.conf").read_text()
    assert "listen_addresses = '127.0.0.1'" in ours
    assert f"port = {POSTGRES_PORT}" in ours and POSTGRES_PORT == 5433
    assert "unix_socket_directories = ''" in ours
    assert "password_encryption = 'scram-sha-256'" in ours
    hba = [
        line
        for line in (service.data_dir / "pg_hba.conf").read_text().splitlines()
        if not line.startswith("#")
    ]
    assert hba == ["host all all 127.0.0.1/32 scram-sha-256"]


def test_env_exports_the_admin_credential_made_once(tmp_path):
    service = PostgresService(root=tmp_path)
    env = service.env()
    assert env["PENGUINMAILS_POSTGRES_HOST"] == "127.0.0.1"
    assert env["PENGUINMAILS_POSTGRES_PORT"] == "5433"
    assert env["PENGUINMAILS_POSTGRES_ADMIN_USER"] == "postgres"
    assert len(env["PENGUINMAILS_POSTGRES_ADMIN_PASSWORD"]) >= 32
    assert PostgresService(root=tmp_path).env() == env
    assert oct((tmp_path / "postgres" / "admin.password").stat().st_mode & 0o777) == "0o600"
    assert service.pid() is None and not service.running()
