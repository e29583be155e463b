-- The sending fleet leaves the tenant-readable `platform` schema for `fleet`, which no tenant-facing role
-- may use: VPS costs and billing days, Hostwinds instance ids, IP reputation and blacklist state are the
-- platform's business, not a tenant's (modules/postgres/duties.py grants nothing on `fleet`).
--
-- app.domain_ip_assignments keeps its foreign key to fleet.smtp_ip_addresses: referential checks run as the
-- referenced table's owner, so the app still inserts assignments without any right on `fleet`.

CREATE SCHEMA fleet;
COMMENT ON SCHEMA fleet IS 'The sending fleet (VPS instances, SMTP IPs): owner and operators only, no tenant-facing grants';

ALTER TABLE platform.vps_instances SET SCHEMA fleet;
ALTER TABLE platform.smtp_ip_addresses SET SCHEMA fleet;

-- A table keeps its ACL when it changes schema: take back every right the platform schema's grants gave.
DO $$
DECLARE
    v_grantee text;
BEGIN
    FOR v_grantee IN
        SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END
          FROM pg_class c, aclexplode(c.relacl) a
         WHERE c.relnamespace = 'fleet'::regnamespace AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA fleet FROM %s', v_grantee);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA fleet FROM %s', v_grantee);
    END LOOP;
END
$$;
