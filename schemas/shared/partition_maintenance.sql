-- Partition maintenance shared by every tier that has time-partitioned tables (linked as NNNN_partition_
-- maintenance.sql from each tier folder; the tier's next migration registers its tables).
--
-- internal.partition_policies says, per partitioned parent, how far ahead partitions are made and how long
-- they are kept; internal.maintain_partitions() does it for every registered parent. The stack schedules
-- `SELECT internal.maintain_partitions()` hourly as the tier's migrator (pg_cron; see
-- modules/postgres/schedule.py), and on-call can run it by hand (`python -m modules.postgres.maintenance`).
--
-- Time: every period boundary is midnight UTC (the first of the month, or each day), computed from
-- `p_now AT TIME ZONE 'UTC'` and written as UTC literals, so neither the session's TimeZone nor the
-- server's changes which rows land where. Retention DETACHes a partition whose whole range is older than
-- `retention`, then DROPs it: the data is past its retention, and a kept detached table would be an object
-- no migration made (schema drift for the security fingerprint) that nothing reaches through the parent.

CREATE TABLE internal.partition_policies (
    parent            regclass PRIMARY KEY,
    granularity       text NOT NULL CHECK (granularity IN ('day', 'month')),
    premake           integer NOT NULL CHECK (premake BETWEEN 1 AND 366),
    retention         interval CHECK (retention >= interval '1 day'),  -- NULL: keep every partition
    partition_schema  name NOT NULL DEFAULT 'partitions',
    suffix_format     text NOT NULL,  -- to_char() pattern of the period start, e.g. 'YYYY_MM', '"p"YYYYMMDD'
    registered_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE internal.partition_policies IS
    'Partitioned parents that internal.maintain_partitions() keeps: premake periods ahead, retention behind';
REVOKE ALL ON internal.partition_policies FROM PUBLIC;

-- The range of every partition of p_parent, read back from its bound. Partitions without a plain
-- FROM/TO bound (DEFAULT, MINVALUE/MAXVALUE) are left out. A date or timestamp key is read as UTC.
CREATE FUNCTION internal.partition_ranges(p_parent regclass)
    RETURNS TABLE (partition_oid oid, partition_name name, range_from timestamptz, range_to timestamptz)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_type regtype;
    v_row record;
    v_bounds text[];
BEGIN
    SELECT a.atttypid::regtype INTO v_type
      FROM pg_partitioned_table pt
      JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
     WHERE pt.partrelid = p_parent;
    FOR v_row IN
        SELECT c.oid, c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = p_parent
    LOOP
        v_bounds := regexp_match(v_row.bound, '^FOR VALUES FROM \(''([^'']+)''\) TO \(''([^'']+)''\)$');
        CONTINUE WHEN v_bounds IS NULL;
        partition_oid := v_row.oid;
        partition_name := v_row.relname;
        IF v_type = 'timestamptz'::regtype THEN
            range_from := v_bounds[1]::timestamptz;
            range_to := v_bounds[2]::timestamptz;
        ELSE
            range_from := v_bounds[1]::timestamp AT TIME ZONE 'UTC';
            range_to := v_bounds[2]::timestamp AT TIME ZONE 'UTC';
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Registers (or changes) the policy of one parent; refuses what maintenance could not keep.
CREATE FUNCTION internal.register_partition_policy(
    p_parent regclass, p_granularity text, p_premake integer, p_retention interval, p_suffix_format text,
    p_partition_schema name DEFAULT 'partitions')
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_strategy "char";
    v_keys integer;
    v_type regtype;
BEGIN
    SELECT pt.partstrat, pt.partnatts, a.atttypid::regtype INTO v_strategy, v_keys, v_type
      FROM pg_partitioned_table pt
      LEFT JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
     WHERE pt.partrelid = p_parent;
    IF NOT FOUND OR v_strategy <> 'r' OR v_keys <> 1
       OR v_type NOT IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype) THEN
        RAISE EXCEPTION '% must be partitioned BY RANGE on one timestamptz, timestamp or date column', p_parent
            USING ERRCODE = '22023';
    END IF;
    IF to_regnamespace(p_partition_schema) IS NULL THEN
        RAISE EXCEPTION 'schema % for the partitions of % does not exist', p_partition_schema, p_parent
            USING ERRCODE = '3F000';
    END IF;
    IF p_suffix_format IS NULL OR p_suffix_format !~ 'YYYY' THEN
        RAISE EXCEPTION 'suffix format % must name the year (YYYY) and the period', p_suffix_format
            USING ERRCODE = '22023';
    END IF;
    INSERT INTO internal.partition_policies AS p
           (parent, granularity, premake, retention, partition_schema, suffix_format)
    VALUES (p_parent, p_granularity, p_premake, p_retention, p_partition_schema, p_suffix_format)
    ON CONFLICT (parent) DO UPDATE
       SET granularity = excluded.granularity, premake = excluded.premake, retention = excluded.retention,
           partition_schema = excluded.partition_schema, suffix_format = excluded.suffix_format;
END
$$;

-- Creates the partition p_name of p_parent for [p_from, p_to) owned like the parent, with no grant (the
-- application reaches a partition only through its parent, whose policies apply). Row level security: a
-- partition of a tenant table gets the exact tenant fence of internal.enable_tenant_rls, like every
-- tenant table and the partitions the tiers made before (the parent's own policies may admit more, e.g.
-- the queue's owner path, which only holds through the parent); a partition of any other parent gets the
-- parent's flags and policies, copied.
CREATE FUNCTION internal.create_partition(
    p_parent regclass, p_schema name, p_name name, p_from timestamptz, p_to timestamptz)
    RETURNS regclass
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_type regtype;
    v_owner name;
    v_from text;
    v_to text;
    v_part regclass;
    v_parent record;
    v_policy record;
BEGIN
    SELECT a.atttypid::regtype INTO v_type
      FROM pg_partitioned_table pt
      JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
     WHERE pt.partrelid = p_parent;
    -- UTC literals: a timestamptz bound gets '+00', a timestamp or date bound the UTC wall time.
    v_from := to_char(p_from AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
              || CASE WHEN v_type = 'timestamptz'::regtype THEN '+00' ELSE '' END;
    v_to := to_char(p_to AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
            || CASE WHEN v_type = 'timestamptz'::regtype THEN '+00' ELSE '' END;
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                   p_schema, p_name, p_parent, v_from, v_to);
    v_part := format('%I.%I', p_schema, p_name)::regclass;
    SELECT c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner) AS owner,
           EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped) AS tenant
      INTO v_parent
      FROM pg_class c WHERE c.oid = p_parent;
    IF v_parent.tenant THEN
        PERFORM internal.enable_tenant_rls(v_part);
    ELSE
        IF v_parent.relrowsecurity THEN
            EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', v_part);
        END IF;
        IF v_parent.relforcerowsecurity THEN
            EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', v_part);
        END IF;
        FOR v_policy IN
            SELECT p.polname, p.polpermissive,
                   CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                 WHEN 'd' THEN 'DELETE' ELSE 'ALL' END AS command,
                   (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END,
                                      ', ' ORDER BY r)
                      FROM unnest(p.polroles) AS r) AS roles,
                   pg_get_expr(p.polqual, p.polrelid) AS qual,
                   pg_get_expr(p.polwithcheck, p.polrelid) AS check_expr
              FROM pg_policy p WHERE p.polrelid = p_parent ORDER BY p.polname
        LOOP
            EXECUTE format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s', v_policy.polname, v_part,
                           CASE WHEN v_policy.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                           v_policy.command, v_policy.roles,
                           CASE WHEN v_policy.qual IS NOT NULL THEN format(' USING (%s)', v_policy.qual) END,
                           CASE WHEN v_policy.check_expr IS NOT NULL
                                THEN format(' WITH CHECK (%s)', v_policy.check_expr) END);
        END LOOP;
    END IF;
    SELECT pg_get_userbyid(relowner) INTO v_owner FROM pg_class WHERE oid = v_part;
    IF v_owner <> v_parent.owner THEN  -- run by an administrator: the tier's owner keeps owning its data
        EXECUTE format('ALTER TABLE %s OWNER TO %I', v_part, v_parent.owner);
    END IF;
    RETURN v_part;
END
$$;

-- For every registered parent: partitions for the current period and the next `premake` ones, then
-- retention. Idempotent (a second run returns no row). Each step runs in its own subtransaction with a
-- short lock timeout, so a busy table or a conflicting partition fails that step alone: it is returned as
-- 'failed' (and raised as a WARNING) and tried again on the next run.
--
-- A period whose edge meets a partition made in another time zone (the first months of a tier created
-- their partitions in the session's zone) is shortened or stretched to meet it, so no gap and no overlap.
-- Returns what it did: action 'created' | 'dropped' | 'failed' | 'busy'.
CREATE FUNCTION internal.maintain_partitions(p_now timestamptz DEFAULT now())
    RETURNS TABLE (action text, parent_table regclass, partition_name text, range_from timestamptz,
                   range_to timestamptz, detail text)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '5s'
    AS $$
DECLARE
    v_policy record;
    v_range record;
    v_step interval;
    v_base timestamp;
    v_current timestamptz;
    v_cutoff timestamptz;
    v_from timestamptz;
    v_to timestamptz;
    v_lo timestamptz;
    v_hi timestamptz;
    v_suffix text;
    v_name text;
    v_adjusted text;
BEGIN
    IF p_now IS NULL THEN
        RAISE EXCEPTION 'p_now must not be NULL' USING ERRCODE = '22004';
    END IF;
    -- One run at a time per database (class 'PM' = 0x504D, object 2; object 1 is the migrations' lock).
    IF NOT pg_try_advisory_xact_lock(20557, 2) THEN
        action := 'busy';
        detail := 'another maintenance run holds the lock; nothing done';
        RETURN NEXT;
        RETURN;
    END IF;
    -- Creation, parent by parent, the current period first.
    FOR v_policy IN
        SELECT p.*, c.relname AS parent_name
          FROM internal.partition_policies p JOIN pg_class c ON c.oid = p.parent
         ORDER BY p.parent::text
    LOOP
        v_step := CASE v_policy.granularity WHEN 'month' THEN interval '1 month' ELSE interval '1 day' END;
        v_base := date_trunc(v_policy.granularity, p_now AT TIME ZONE 'UTC');
        FOR i IN 0 .. v_policy.premake LOOP
            v_from := (v_base + i * v_step) AT TIME ZONE 'UTC';
            v_to := (v_base + (i + 1) * v_step) AT TIME ZONE 'UTC';
            v_suffix := to_char(v_base + i * v_step, v_policy.suffix_format);
            v_name := left(v_policy.parent_name, 62 - length(v_suffix)) || '_' || v_suffix;
            CONTINUE WHEN EXISTS (SELECT 1 FROM internal.partition_ranges(v_policy.parent) r
                                   WHERE r.partition_name = v_name);
            -- Meet the neighbours: start where a partition covering the start ends (or where the one just
            -- before ends, when it stops less than a day short), stop where the next one begins.
            SELECT coalesce(max(r.range_to), v_from) INTO v_lo
              FROM internal.partition_ranges(v_policy.parent) r
             WHERE r.range_from <= v_from AND r.range_to > v_from - interval '1 day' AND r.range_to < v_to;
            SELECT coalesce(min(r.range_from), v_to) INTO v_hi
              FROM internal.partition_ranges(v_policy.parent) r
             WHERE r.range_from > v_lo AND r.range_from < v_to;
            CONTINUE WHEN v_lo >= v_hi
                OR EXISTS (SELECT 1 FROM internal.partition_ranges(v_policy.parent) r
                            WHERE r.range_from <= v_lo AND r.range_to >= v_hi);
            v_adjusted := CASE WHEN (v_lo, v_hi) <> (v_from, v_to)
                               THEN format('UTC period %s to %s moved to meet its neighbours',
                                           v_from AT TIME ZONE 'UTC', v_to AT TIME ZONE 'UTC') END;
            <<create_step>>  -- a subtransaction: a failure undoes this partition alone
            BEGIN
                PERFORM internal.create_partition(v_policy.parent, v_policy.partition_schema, v_name, v_lo, v_hi);
                action := 'created';
                detail := v_adjusted;
            EXCEPTION WHEN OTHERS THEN
                action := 'failed';
                detail := format('create: [%s] %s', SQLSTATE, SQLERRM);
                RAISE WARNING 'maintain_partitions: % %.%: %', v_policy.parent, v_policy.partition_schema,
                    v_name, detail;
            END create_step;
            parent_table := v_policy.parent;
            partition_name := format('%I.%I', v_policy.partition_schema, v_name);
            range_from := v_lo;
            range_to := v_hi;
            RETURN NEXT;
        END LOOP;
    END LOOP;
    -- Retention: referencing parents first (attachments before the bodies they point at), oldest first.
    -- Never the current period or a later one, whatever the retention says.
    FOR v_policy IN
        SELECT p.*, c.relname AS parent_name
          FROM internal.partition_policies p JOIN pg_class c ON c.oid = p.parent
         WHERE p.retention IS NOT NULL
         ORDER BY EXISTS (SELECT 1 FROM pg_constraint f
                           WHERE f.contype = 'f' AND f.conrelid = p.parent AND f.conparentid = 0
                             AND f.confrelid IN (SELECT q.parent FROM internal.partition_policies q)) DESC,
                  p.parent::text
    LOOP
        v_current := date_trunc(v_policy.granularity, p_now AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
        v_cutoff := least(p_now - v_policy.retention, v_current);
        FOR v_range IN
            SELECT r.* FROM internal.partition_ranges(v_policy.parent) r
             WHERE r.range_to <= v_cutoff ORDER BY r.range_from
        LOOP
            partition_name := v_range.partition_oid::regclass::text;  -- qualified: search_path is pg_catalog
            <<drop_step>>
            BEGIN
                EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', v_policy.parent, v_range.partition_oid::regclass);
                EXECUTE format('DROP TABLE %s', v_range.partition_oid::regclass);
                action := 'dropped';
                detail := format('whole range before %s UTC (retention %s)', v_cutoff AT TIME ZONE 'UTC',
                                 v_policy.retention);
            EXCEPTION WHEN OTHERS THEN
                action := 'failed';
                detail := format('detach: [%s] %s', SQLSTATE, SQLERRM);
                RAISE WARNING 'maintain_partitions: % %: %', v_policy.parent, partition_name, detail;
            END drop_step;
            parent_table := v_policy.parent;
            range_from := v_range.range_from;
            range_to := v_range.range_to;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION internal.partition_ranges(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION internal.register_partition_policy(regclass, text, integer, interval, text, name)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION internal.create_partition(regclass, name, name, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION internal.maintain_partitions(timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION internal.maintain_partitions(timestamptz) IS
    'Creates the partitions ahead and drops those past retention for every internal.partition_policies row';
