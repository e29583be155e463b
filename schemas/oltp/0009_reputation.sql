-- The reputation writer: DNSBL results on the sending IPs, and quarantine marks on their domain assignments.
--
-- No existing role may write fleet.smtp_ip_addresses (0008 took every tenant-facing grant away), so the
-- checker logs in as its own duty role (``reputation``, modules/postgres/duties.py) whose only right is
-- EXECUTE on the SECURITY DEFINER functions of schema ``reputation`` below: it reads and writes no table
-- itself. Each function pins search_path with pg_temp last; PUBLIC has no EXECUTE (0001's default).
--
-- Quarantine marks an IP (status 'quarantined', reputation_state 'critical') and every assignment on it
-- (quarantined_since), so the transport planner (modules/reputation/quarantine.py) moves those domains to
-- another warmed IP of their tenant or pauses them. A cleared IP goes back to 'warming' ('fair').
-- app.domain_ip_assignments admits its owner beside the tenant fence, as the queue's tables do (the
-- definer functions run as the owner; modules/postgres/catalog.py OWNER_ADMITTED_TABLES lists it).

CREATE SCHEMA reputation;
COMMENT ON SCHEMA reputation IS 'The DNSBL checker''s functions (SECURITY DEFINER); the reputation role may only execute these';

ALTER TABLE app.domain_ip_assignments ADD COLUMN quarantined_since timestamptz;
COMMENT ON COLUMN app.domain_ip_assignments.quarantined_since IS
    'Set while the IP is listed on a DNSBL: the domain must not send through it (reputation.record_check)';

-- True inside a function owned by the table's owner (SECURITY DEFINER), or for the owner itself. Every name
-- is qualified, so no SET clause is needed (as in schemas/queue/0004).
CREATE FUNCTION app_private.is_owner_of(p_table regclass) RETURNS boolean
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                    WHERE c.oid = p_table AND c.relowner = CURRENT_USER::pg_catalog.regrole::pg_catalog.oid);
END
$$;

DO $$
DECLARE
    v_check constant text := 'tenant_id = (SELECT app_private.current_tenant_id()) OR '
                             '(SELECT app_private.is_owner_of(''app.domain_ip_assignments''::regclass))';
BEGIN
    EXECUTE format('ALTER POLICY tenant_fence ON app.domain_ip_assignments USING (%s) WITH CHECK (%s)', v_check, v_check);
    EXECUTE format('ALTER POLICY tenant_access ON app.domain_ip_assignments USING (%s) WITH CHECK (%s)', v_check, v_check);
END
$$;

-- One IP's check. p_outcome: 'listed' (some zone lists it), 'clean' (every zone answered NXDOMAIN) or
-- 'error' (undecided: nothing changes but the per-zone document). Returns known = false for an address
-- the fleet does not have. A burned IP stays burned.
CREATE FUNCTION reputation.record_check(p_ip inet, p_outcome text, p_status jsonb, p_checked timestamptz,
                                        OUT known boolean, OUT status text, OUT reputation_state text,
                                        OUT assignments integer)
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_id uuid;
    v_status text;
    v_state text;
BEGIN
    IF p_outcome IS NULL OR p_outcome NOT IN ('listed', 'clean', 'error') THEN
        RAISE EXCEPTION 'reputation.record_check: outcome must be listed, clean or error (got %)', p_outcome
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_status IS NULL OR jsonb_typeof(p_status) <> 'object' THEN
        RAISE EXCEPTION 'reputation.record_check: status must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT s.id, s.status, s.reputation_state INTO v_id, v_status, v_state
      FROM fleet.smtp_ip_addresses s WHERE s.ip_address = p_ip FOR UPDATE;
    known := v_id IS NOT NULL;
    assignments := 0;
    IF NOT known THEN
        RETURN;
    END IF;
    IF p_outcome = 'listed' THEN
        IF v_status <> 'burned' THEN
            v_status := 'quarantined';
        END IF;
        v_state := 'critical';
    ELSIF p_outcome = 'clean' AND v_status = 'quarantined' THEN
        v_status := 'warming';
        v_state := 'fair';
    ELSIF p_outcome = 'clean' AND v_state = 'critical' THEN
        v_state := 'fair';
    END IF;
    UPDATE fleet.smtp_ip_addresses s
       SET status = v_status, reputation_state = v_state, provider_blacklist_status = p_status,
           last_reputation_check = CASE WHEN p_outcome = 'error' THEN s.last_reputation_check ELSE p_checked END,
           updated = now()
     WHERE s.id = v_id;
    IF p_outcome = 'listed' THEN
        UPDATE app.domain_ip_assignments a SET quarantined_since = p_checked
         WHERE a.smtp_ip_address_id = v_id AND a.quarantined_since IS NULL;
        GET DIAGNOSTICS assignments = ROW_COUNT;
    ELSIF p_outcome = 'clean' THEN
        UPDATE app.domain_ip_assignments a SET quarantined_since = NULL
         WHERE a.smtp_ip_address_id = v_id AND a.quarantined_since IS NOT NULL;
        GET DIAGNOSTICS assignments = ROW_COUNT;
    END IF;
    status := v_status;
    reputation_state := v_state;
END
$$;

-- The live assignments (not expired) with their IP's state, for the transport planner: every tenant's, read
-- tenant by tenant under the fence for the domain names (app.domains admits no owner). The caller's tenant
-- setting is put back before returning (transaction-local either way; an error rolls it back).
CREATE FUNCTION reputation.assignments()
    RETURNS TABLE (tenant_id uuid, domain text, ip inet, ip_status text, warmup_state text,
                   quarantined_since timestamptz)
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid;
    v_saved constant text := pg_catalog.current_setting('app.tenant_id', true);
BEGIN
    FOR v_tenant IN SELECT DISTINCT a.tenant_id FROM app.domain_ip_assignments a ORDER BY 1 LOOP
        PERFORM pg_catalog.set_config('app.tenant_id', v_tenant::text, true);
        RETURN QUERY
        SELECT a.tenant_id, d.domain::text, s.ip_address, s.status::text, a.warmup_state::text,
               a.quarantined_since
          FROM app.domain_ip_assignments a
          JOIN app.domains d ON d.tenant_id = a.tenant_id AND d.id = a.domain_id
          JOIN fleet.smtp_ip_addresses s ON s.id = a.smtp_ip_address_id
         WHERE a.tenant_id = v_tenant AND a.status <> 'expired'
         ORDER BY d.domain, s.ip_address;
    END LOOP;
    PERFORM pg_catalog.set_config('app.tenant_id', coalesce(v_saved, ''), true);
END
$$;

-- The fleet's sending IPs and their states (what the exporter exports as penguinmails_ip_quarantined).
CREATE FUNCTION reputation.ip_states()
    RETURNS TABLE (ip inet, status text, reputation_state text, last_reputation_check timestamptz)
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT s.ip_address, s.status::text, s.reputation_state::text, s.last_reputation_check
      FROM fleet.smtp_ip_addresses s ORDER BY s.ip_address
$$;
