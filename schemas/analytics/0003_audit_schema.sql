-- The staff audit trail leaves `app` (where the app role has full DML on every table) for `audit`, where the
-- app role may only append: INSERT, no SELECT, UPDATE, DELETE or TRUNCATE; the readonly role reads it for
-- reports (modules/postgres/duties.py). The tenant fence moves with the table: both see their tenant only.

CREATE SCHEMA audit;
COMMENT ON SCHEMA audit IS 'Append-only audit trails under the tenant fence: the app inserts, readonly reads, nobody else';

ALTER TABLE app.admin_audit_log SET SCHEMA audit;  -- its identity sequence, indexes and policies move along

-- A table keeps its ACL when it changes schema: take back every right the app schema's grants gave.
DO $$
DECLARE
    v_grantee text;
BEGIN
    FOR v_grantee IN
        SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END
          FROM pg_class c, aclexplode(c.relacl) a
         WHERE c.relnamespace = 'audit'::regnamespace AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA audit FROM %s', v_grantee);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA audit FROM %s', v_grantee);
    END LOOP;
END
$$;
