"""Role drift on a real server: grants to PUBLIC and grants beyond a duty's set are reported, then taken back.

``role_problems`` is what a ``Role`` resource's refresh reports; ``grants_apply`` is what ``up`` runs. Each
test provisions scratch tiers and changes grants out of band as the admin.
"""

from __future__ import annotations

import pytest

from modules.postgres import admin as pg_admin
from modules.postgres import migrations as mig
from modules.postgres.duties import grants_for
from tests.support.postgres import REPO_ROOT, add_duty, provision, provision_queue_with_worker, teardown

pytestmark = pytest.mark.services


def problems(db, kind: str) -> list[str]:
    with db.connect() as admin:
        return pg_admin.role_problems(admin, db.role(kind), db.role("migrator"), grants_for(db.tier, kind))


def reapply(db, kind: str) -> None:
    with db.connect() as admin, admin.transaction():
        pg_admin.grants_apply(admin, db.role(kind), db.role("migrator"), grants_for(db.tier, kind))


def test_public_and_stray_grants_on_private_schemas_are_drift_and_up_takes_them_back(devenv_env):
    db = provision("oltp")
    try:
        app, readonly, migrator = db.role("app"), db.role("readonly"), db.role("migrator")
        assert problems(db, "app") == [] and problems(db, "readonly") == []
        with db.connect() as admin:
            for statement in (
                "GRANT USAGE ON SCHEMA fleet TO PUBLIC",
                "GRANT SELECT ON fleet.vps_instances TO PUBLIC",
                "GRANT SELECT (ip_address) ON fleet.smtp_ip_addresses TO PUBLIC",
                "GRANT EXECUTE ON FUNCTION internal.enable_tenant_rls(regclass) TO PUBLIC",
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA internal GRANT SELECT ON TABLES TO PUBLIC",
                f"GRANT USAGE ON SCHEMA fleet TO {app}",
                f"GRANT SELECT ON fleet.smtp_ip_addresses TO {app}",
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA fleet GRANT SELECT ON TABLES TO {app}",
                f"GRANT SELECT (monthly_cost) ON fleet.vps_instances TO {readonly}",
            ):
                admin.execute(statement)
        found = "\n".join(problems(db, "app"))
        for expected in (
            "PUBLIC has schema fleet (USAGE)",
            "PUBLIC has table fleet.vps_instances (SELECT)",
            "PUBLIC has column fleet.smtp_ip_addresses.ip_address (SELECT)",
            "PUBLIC has function internal.enable_tenant_rls(p_table regclass) (EXECUTE)",
            f"PUBLIC has new tables of {migrator} in schema internal (SELECT)",
            f"{app} has USAGE on fleet, not granted by the stack",
            f"{app} has SELECT on fleet.smtp_ip_addresses, not granted by the stack",
            f"default privileges of {migrator} give {app} SELECT on new tables in fleet, not granted by the stack",
        ):
            assert expected in found, f"{expected!r} not in:\n{found}"
        found = "\n".join(problems(db, "readonly"))
        assert f"{readonly} has SELECT on fleet.vps_instances.monthly_cost, not granted by the stack" in found
        assert "PUBLIC has table fleet.vps_instances (SELECT)" in found

        reapply(db, "app")
        reapply(db, "readonly")
        assert problems(db, "app") == [] and problems(db, "readonly") == []
        with db.connect() as admin:
            # Taking PUBLIC's grants back leaves the migrations' security fingerprint as the migrations made it.
            assert mig.inspect(admin, mig.load_dir(REPO_ROOT / "schemas" / "oltp")).drift == []
    finally:
        teardown(db)


@pytest.mark.parametrize(
    ("tier", "migration", "schema"), [("oltp", "0008_", "fleet"), ("analytics", "0003_", "audit")]
)
def test_moving_tables_out_of_reach_takes_their_old_grants_back(
    devenv_env, tmp_path, tier, migration, schema
):
    """A table keeps its ACL when it changes schema: a tier granted before the move loses those grants with
    the migration itself, before the Role resources run again."""
    before = tmp_path / tier
    before.mkdir()
    for path in sorted((REPO_ROOT / "schemas" / tier).glob("*.sql")):
        if path.name >= migration:
            break
        (before / path.name).write_bytes(path.read_bytes())
    db = provision(tier, directory=before)
    try:
        for kind in list(db.missing):  # the duty's grants as they were before the schema existed
            if schema not in db.missing[kind]:
                continue  # the duty of a later migration (oltp's warmup, 0010): it comes after them
            # Without the moved schema, nor any other one of a later migration (analytics' retention, 0004).
            add_duty(db, kind, [g for g in grants_for(tier, kind) if g["schema"] not in db.missing[kind]])
        with db.connect() as admin:
            mig.apply(admin, mig.load_dir(REPO_ROOT / "schemas" / tier), owner=db.role("migrator"))
            grants = admin.execute(
                """SELECT c.relname, pg_get_userbyid(a.grantee), a.privilege_type
                     FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
                    WHERE c.relnamespace = %s::regnamespace AND a.grantee <> c.relowner""",
                [schema],
            ).fetchall()
        assert grants == [], f"{tier}: grants left on {schema}: {grants}"
        for kind in list(db.missing):
            add_duty(db, kind)
        # The Role resources' next update then grants what the duty says (nothing on fleet, INSERT on audit).
        for kind in ("app", "readonly"):
            if tier == "analytics":
                assert any(p.startswith(f"{db.role(kind)} lacks") for p in problems(db, kind))
            reapply(db, kind)
            assert problems(db, kind) == []
    finally:
        teardown(db)


def test_a_worker_with_table_grants_is_drift(devenv_env):
    db = provision_queue_with_worker()
    try:
        worker = db.role("worker")
        assert problems(db, "worker") == []
        with db.connect() as admin:
            admin.execute(f"GRANT USAGE ON SCHEMA app TO {worker}")
            admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA app TO {worker}")
            admin.execute(f"GRANT EXECUTE ON FUNCTION app_private.current_tenant_id() TO {worker}")
        found = "\n".join(problems(db, "worker"))
        assert f"{worker} has USAGE on app, not granted by the stack" in found
        assert f"{worker} has SELECT on app.jobs, not granted by the stack" in found
        assert f"{worker} has EXECUTE on app_private.current_tenant_id(), not granted by the stack" in found
        reapply(db, "worker")
        assert problems(db, "worker") == []
    finally:
        teardown(db)
