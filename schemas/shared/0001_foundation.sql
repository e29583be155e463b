-- Foundation shared by every tier: schemas, the tenant setting, and the one way tenant tables get RLS.
--
-- The application sets the tenant at the start of every transaction with
--   SELECT set_config('app.tenant_id', '<uuid>', true);
-- and every tenant table is fenced by it. An unset (or reset, i.e. '') setting reads as NULL, and a NULL
-- tenant matches no row: a forgotten set_config shows nothing instead of everything.

CREATE SCHEMA app;          -- tenant tables (RLS) and the functions the application calls
CREATE SCHEMA platform;     -- shared reference data without a tenant; the application may only read it
CREATE SCHEMA app_private;  -- helpers the policies call; not on anyone's search_path
CREATE SCHEMA internal;     -- owner-only tables and maintenance functions; no grants to application roles

COMMENT ON SCHEMA app IS 'Tenant tables under forced row level security, keyed on app.tenant_id';

-- New functions are not executable by PUBLIC; each role gets EXECUTE explicitly (see modules/postgres).
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- STABLE SQL (inlinable, evaluated once per statement when wrapped in a scalar subquery); never IMMUTABLE.
CREATE FUNCTION app_private.current_tenant_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.tenant_id', true), '')::uuid $$;

COMMENT ON FUNCTION app_private.current_tenant_id() IS
    'The tenant of the current transaction, NULL when unset (NULL matches no row)';

-- Every tenant table calls this once in the migration that creates it. Two policies: a restrictive fence
-- that every other policy is ANDed with (so a later permissive policy cannot widen access), and the
-- permissive policy that grants the tenant's own rows. Both check reads (USING) and writes (WITH CHECK).
CREATE FUNCTION internal.enable_tenant_rls(p_table regclass) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog
    AS $$
DECLARE
    v_check constant text := 'tenant_id = (SELECT app_private.current_tenant_id())';
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_table);
    EXECUTE format('CREATE POLICY tenant_fence ON %s AS RESTRICTIVE FOR ALL USING (%s) WITH CHECK (%s)',
                   p_table, v_check, v_check);
    EXECUTE format('CREATE POLICY tenant_access ON %s AS PERMISSIVE FOR ALL USING (%s) WITH CHECK (%s)',
                   p_table, v_check, v_check);
END
$$;
