-- IP warm-up plans (modules/reputation/warmup.py) stored with the IP, and the one way to change them.
--
-- Numbered 0010, two ahead of 0008: 0009 is the reputation checker's (DNSBL state), written in parallel.
--
-- Who may change what:
-- * fleet.ip_warmup_plans is owner-only like the rest of fleet. The scheduled job and the CLI change it
--   through the SECURITY DEFINER functions of schema `warmup`, which only the tier's `warmup` duty may execute
--   (modules/postgres/duties.py): start a plan, record a decision, hold or resume.
-- * app.domain_ip_assignments.warmup_state is the tenant's read-only view of the IP's warm-up: a new
--   assignment takes the IP's current state, and only those functions (running as the owner) change it
--   afterwards; a tenant role's UPDATE of the column is refused.
-- * smtp_ip_addresses.status follows the plan ('warming' → 'warmed'), except for an IP the reputation
--   checker took out ('degraded', 'burned', 'quarantined'): warm-up never puts it back.

CREATE TABLE fleet.ip_warmup_plans (
    smtp_ip_address_id  uuid PRIMARY KEY REFERENCES fleet.smtp_ip_addresses (id) ON DELETE CASCADE,
    day                 integer NOT NULL CHECK (day >= 1),
    held                boolean NOT NULL DEFAULT false,
    held_reason         text,
    daily_cap           integer NOT NULL CHECK (daily_cap >= 1),
    hourly_cap          integer NOT NULL CHECK (hourly_cap >= 1 AND hourly_cap <= daily_cap),
    provider_caps       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(provider_caps) = 'object'),
    plan                jsonb NOT NULL CHECK (jsonb_typeof(plan) = 'object'),
    last_advanced_at    timestamptz,
    last_sent_at        timestamptz,
    last_decision       jsonb,
    created             timestamptz NOT NULL DEFAULT now(),
    updated             timestamptz NOT NULL DEFAULT now(),
    CHECK (day <= coalesce((plan ->> 'days')::integer, day))
);
COMMENT ON TABLE fleet.ip_warmup_plans IS
    'Warm-up plan and state per sending IP; changed only through the warmup.* functions';

-- Which tenants hold assignments to an IP, so the owner can update their warmup_state: the owner is under
-- the tenant fence too and could not find them otherwise. Written by the assignment trigger below; it holds
-- no tenant data (the column is not named tenant_id because no tenant reads this table: it is not fenced
-- by tenant, it is out of every tenant-facing role's reach in schema fleet).
CREATE TABLE fleet.ip_assignment_tenants (
    smtp_ip_address_id  uuid NOT NULL REFERENCES fleet.smtp_ip_addresses (id) ON DELETE CASCADE,
    assignment_tenant   uuid NOT NULL,
    PRIMARY KEY (smtp_ip_address_id, assignment_tenant)
);

CREATE SCHEMA warmup;
COMMENT ON SCHEMA warmup IS 'SECURITY DEFINER functions that change IP warm-up state; the warmup duty only';

-- The warm-up state an assignment shows for an IP's plan: no plan yet → unwarmed.
CREATE FUNCTION internal.warmup_state_of(p_ip uuid) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT coalesce((SELECT CASE WHEN w.day >= (w.plan ->> 'days')::integer THEN 'warmed' ELSE 'warming' END
                       FROM fleet.ip_warmup_plans w WHERE w.smtp_ip_address_id = p_ip), 'unwarmed')
$$;

-- Before a write of app.domain_ip_assignments, with the writer's rights (not SECURITY DEFINER: current_user
-- must be the writer): only the owner (migrations, and the warmup.* functions, which run as the owner) sets
-- warmup_state. A tenant's new or re-pointed row starts 'unwarmed'; the trigger after it puts the IP's state.
CREATE FUNCTION internal.domain_ip_assignment_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF current_user = (SELECT c.relowner::regrole::name FROM pg_class c WHERE c.oid = TG_RELID) THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.smtp_ip_address_id IS DISTINCT FROM OLD.smtp_ip_address_id THEN
        NEW.warmup_state := 'unwarmed';
    ELSIF NEW.warmup_state IS DISTINCT FROM OLD.warmup_state THEN
        RAISE EXCEPTION 'warmup_state of an IP assignment follows the IP''s warm-up plan and cannot be set'
            USING ERRCODE = '42501';
    END IF;
    RETURN NEW;
END
$$;

-- After a new or re-pointed assignment, as the owner: note its tenant for the IP (so the warmup.* functions
-- find it) and give the row the IP's current warm-up state. The row is the writer's tenant's, so the
-- UPDATE passes the fence of the writer's transaction.
CREATE FUNCTION internal.domain_ip_assignment_note() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_state constant text := internal.warmup_state_of(NEW.smtp_ip_address_id);
BEGIN
    INSERT INTO fleet.ip_assignment_tenants (smtp_ip_address_id, assignment_tenant)
    VALUES (NEW.smtp_ip_address_id, NEW.tenant_id) ON CONFLICT DO NOTHING;
    IF NEW.warmup_state IS DISTINCT FROM v_state THEN
        UPDATE app.domain_ip_assignments SET warmup_state = v_state WHERE tenant_id = NEW.tenant_id AND id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER domain_ip_assignments_warmup_guard
    BEFORE INSERT OR UPDATE ON app.domain_ip_assignments
    FOR EACH ROW EXECUTE FUNCTION internal.domain_ip_assignment_guard();
CREATE TRIGGER domain_ip_assignments_warmup_note
    AFTER INSERT OR UPDATE OF smtp_ip_address_id ON app.domain_ip_assignments
    FOR EACH ROW EXECUTE FUNCTION internal.domain_ip_assignment_note();

-- Bring every assignment of the IP and the IP's status in line with its plan. Runs as the owner; sets the
-- tenant of each assignment for its own UPDATE and puts the caller's setting back.
CREATE FUNCTION internal.warmup_sync(p_ip uuid) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_state constant text := internal.warmup_state_of(p_ip);
    v_saved constant text := current_setting('app.tenant_id', true);
    v_tenant uuid;
BEGIN
    UPDATE fleet.smtp_ip_addresses
       SET status = v_state, updated = now()
     WHERE id = p_ip AND status NOT IN ('degraded', 'burned', 'quarantined') AND status <> v_state
       AND v_state <> 'unwarmed';
    FOR v_tenant IN SELECT assignment_tenant FROM fleet.ip_assignment_tenants WHERE smtp_ip_address_id = p_ip
    LOOP
        PERFORM set_config('app.tenant_id', v_tenant::text, true);
        UPDATE app.domain_ip_assignments SET warmup_state = v_state
         WHERE smtp_ip_address_id = p_ip AND warmup_state <> v_state;
    END LOOP;
    PERFORM set_config('app.tenant_id', coalesce(v_saved, ''), true);
END
$$;

CREATE FUNCTION internal.warmup_ip_id(p_ip inet) RETURNS uuid
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_id uuid;
BEGIN
    SELECT id INTO v_id FROM fleet.smtp_ip_addresses WHERE ip_address = p_ip;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no sending IP % in fleet.smtp_ip_addresses', p_ip USING ERRCODE = 'P0002';
    END IF;
    RETURN v_id;
END
$$;

-- Every sending IP with its plan (NULLs for an IP without one).
CREATE FUNCTION warmup.plans()
    RETURNS TABLE (ip inet, status text, day integer, held boolean, held_reason text, daily_cap integer,
                   hourly_cap integer, provider_caps jsonb, plan jsonb, last_advanced_at timestamptz,
                   last_sent_at timestamptz, last_decision jsonb)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT s.ip_address, s.status::text, w.day, w.held, w.held_reason, w.daily_cap, w.hourly_cap,
           w.provider_caps, w.plan, w.last_advanced_at, w.last_sent_at, w.last_decision
      FROM fleet.smtp_ip_addresses s LEFT JOIN fleet.ip_warmup_plans w ON w.smtp_ip_address_id = s.id
     ORDER BY s.ip_address
$$;

-- Start a plan for an IP that has none (true), or leave an existing plan alone (false).
CREATE FUNCTION warmup.plan_start(p_ip inet, p_plan jsonb, p_day integer, p_daily_cap integer,
                                  p_hourly_cap integer, p_provider_caps jsonb, p_started_at timestamptz)
    RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_id constant uuid := internal.warmup_ip_id(p_ip);
BEGIN
    INSERT INTO fleet.ip_warmup_plans (smtp_ip_address_id, day, daily_cap, hourly_cap, provider_caps, plan,
                                       last_advanced_at)
    VALUES (v_id, p_day, p_daily_cap, p_hourly_cap, coalesce(p_provider_caps, '{}'), p_plan, p_started_at)
    ON CONFLICT (smtp_ip_address_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM internal.warmup_sync(v_id);
    RETURN true;
END
$$;

-- Store a decision of the scheduled job. p_expected_day is the day the decision was made on: when the plan
-- moved meanwhile (another run, an operator) nothing is written and the answer is false. A held IP keeps its
-- day whatever the decision says (the refusal is an error: the caller ignored the hold).
CREATE FUNCTION warmup.plan_record(p_ip inet, p_expected_day integer, p_day integer, p_daily_cap integer,
                                   p_hourly_cap integer, p_provider_caps jsonb, p_decision jsonb,
                                   p_advanced boolean, p_decided_at timestamptz, p_last_sent_at timestamptz)
    RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_id constant uuid := internal.warmup_ip_id(p_ip);
    v_plan fleet.ip_warmup_plans;
BEGIN
    SELECT * INTO v_plan FROM fleet.ip_warmup_plans WHERE smtp_ip_address_id = v_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sending IP % has no warm-up plan: start one first', p_ip USING ERRCODE = 'P0002';
    END IF;
    IF v_plan.day <> p_expected_day THEN
        RETURN false;
    END IF;
    IF v_plan.held AND p_day <> v_plan.day THEN
        RAISE EXCEPTION 'sending IP % is held on day %: resume it before its day changes', p_ip, v_plan.day
            USING ERRCODE = '55000';
    END IF;
    UPDATE fleet.ip_warmup_plans
       SET day = p_day, daily_cap = p_daily_cap, hourly_cap = p_hourly_cap,
           provider_caps = coalesce(p_provider_caps, '{}'), last_decision = p_decision,
           last_advanced_at = CASE WHEN p_advanced THEN p_decided_at ELSE last_advanced_at END,
           last_sent_at = greatest(last_sent_at, p_last_sent_at), updated = now()
     WHERE smtp_ip_address_id = v_id;
    PERFORM internal.warmup_sync(v_id);
    RETURN true;
END
$$;

-- Hold (true) or resume (false) an IP's plan; a held plan never changes its day. False: no such plan.
CREATE FUNCTION warmup.plan_hold(p_ip inet, p_held boolean, p_reason text)
    RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    UPDATE fleet.ip_warmup_plans
       SET held = p_held, held_reason = CASE WHEN p_held THEN left(p_reason, 500) END, updated = now()
     WHERE smtp_ip_address_id = internal.warmup_ip_id(p_ip);
    RETURN FOUND;
END
$$;

REVOKE ALL ON FUNCTION warmup.plans(), warmup.plan_start(inet, jsonb, integer, integer, integer, jsonb, timestamptz),
    warmup.plan_record(inet, integer, integer, integer, integer, jsonb, jsonb, boolean, timestamptz, timestamptz),
    warmup.plan_hold(inet, boolean, text) FROM PUBLIC;
