-- Row-level data retention shared by the tiers that keep history rows (linked as NNNN_retention.sql from each
-- tier folder; the tier's next migration registers its tables). Partition maintenance drops whole old
-- partitions; this deletes the rows that partitions do not cover (bodies past their retention, failure logs,
-- dead letters, daily roll-ups).
--
-- internal.retention_policies says which table loses which rows (a condition on $1 = the cutoff, now minus
-- the tier's data_retention_days, and $2 = now). The stack schedules `CALL retention.run(<days>)` daily as
-- the tier's migrator (pg_cron; modules/postgres/retention.py); on-call runs it by hand with
-- `python -m modules.postgres.retention`.
--
-- Who may delete across tenants: only the table owner inside retention.purge_batch(). That SECURITY
-- DEFINER function marks its transaction in internal.retention_active around its one DELETE (the mark is
-- removed before it returns and never committed), and a table registered here admits the owner past its
-- tenant fence only in a marked transaction (app_private.in_retention_run). A tenant-facing role is not the
-- owner and cannot write the mark; another SECURITY DEFINER function of the owner, called by such a role,
-- runs in an unmarked transaction. So the fence stays exactly the tenant's for everything but this one
-- function. Nobody but the owner may execute the functions below.
--
-- Locks: retention.run() is a procedure that deletes in batches of p_batch rows and COMMITs after each one,
-- so a large backlog never holds its row locks (or the vacuum horizon) for the whole run. Every run of a
-- table is recorded in retention.runs, which the tier's readonly login reads for the exporter's metrics.

CREATE SCHEMA retention;
COMMENT ON SCHEMA retention IS 'Row retention runs: retention.run() (owner only) and its record retention.runs';

CREATE TABLE internal.retention_policies (
    relation    regclass PRIMARY KEY,
    tier        text NOT NULL CHECK (tier IN ('oltp', 'content', 'analytics', 'queue')),
    condition   text NOT NULL CHECK (condition <> ''),  -- SQL on the table's columns; $1 cutoff, $2 now
    position    integer NOT NULL DEFAULT 100,           -- lower first (children before their parents)
    registered_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE internal.retention_policies IS
    'Tables retention.run() deletes from: rows matching condition ($1 = now - retention days, $2 = now)';
REVOKE ALL ON internal.retention_policies FROM PUBLIC;

CREATE TABLE retention.runs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tier         text NOT NULL,
    table_name   text NOT NULL,
    cutoff       timestamptz NOT NULL,
    deleted      bigint NOT NULL CHECK (deleted >= 0),
    batches      integer NOT NULL CHECK (batches >= 0),
    status       text NOT NULL CHECK (status IN ('succeeded', 'failed')),
    detail       text,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL
);
CREATE INDEX retention_runs_table_idx ON retention.runs (tier, table_name, finished_at DESC);
COMMENT ON TABLE retention.runs IS 'One row per table and run of retention.run(): what was deleted, when, how';
REVOKE ALL ON retention.runs FROM PUBLIC;

-- The transactions retention.purge_batch() is deleting in, while it does (a row is never committed).
CREATE TABLE internal.retention_active (
    xact  xid8 PRIMARY KEY
);
REVOKE ALL ON internal.retention_active FROM PUBLIC;

-- True only for the owner of p_table inside retention.purge_batch(): the owner test comes first, so a
-- tenant role never reads the (owner-only) mark. Every name is qualified (it runs with the caller's
-- search_path inside policies).
CREATE FUNCTION app_private.in_retention_run(p_table regclass) RETURNS boolean
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                    WHERE c.oid = p_table AND c.relowner = CURRENT_USER::pg_catalog.regrole::pg_catalog.oid) THEN
        RETURN false;
    END IF;
    RETURN EXISTS (SELECT 1 FROM internal.retention_active a
                    WHERE a.xact = pg_catalog.pg_current_xact_id_if_assigned());
END
$$;
COMMENT ON FUNCTION app_private.in_retention_run(regclass) IS
    'The owner of the table, inside retention.purge_batch(): the only cross-tenant reader and deleter';

-- Registers (or changes) the retention of one table and, for a table whose fence is exactly the tenant's,
-- admits the retention run past it: the restrictive fence's USING gains `OR in_retention_run(<table>)`
-- (its WITH CHECK stays the tenant's: a retention run writes nothing), and two permissive policies give
-- that run SELECT and DELETE. The queue's tables already admit their owner (schemas/queue/0004).
CREATE FUNCTION internal.register_retention_policy(p_table regclass, p_tier text, p_condition text,
                                                   p_position integer DEFAULT 100)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_fence text := 'tenant_id = (SELECT app_private.current_tenant_id())';
    v_admit text := format('(SELECT app_private.in_retention_run(%L::regclass))', p_table::text);
    v_owner_admitted boolean;
BEGIN
    -- The condition must at least plan on the table ($1, $2 typed as the run passes them).
    EXECUTE format('EXPLAIN SELECT 1 FROM %s WHERE %s', p_table, p_condition)
        USING now() - interval '1 day', now();
    INSERT INTO internal.retention_policies (relation, tier, condition, position)
    VALUES (p_table, p_tier, p_condition, p_position)
    ON CONFLICT (relation) DO UPDATE SET tier = EXCLUDED.tier, condition = EXCLUDED.condition,
                                         position = EXCLUDED.position;
    SELECT pg_get_expr(p.polqual, p.polrelid) LIKE '%is_owner_of%' INTO v_owner_admitted
      FROM pg_policy p WHERE p.polrelid = p_table AND p.polname = 'tenant_fence';
    IF v_owner_admitted IS NULL THEN
        RAISE EXCEPTION '% has no tenant_fence policy', p_table;
    END IF;
    IF NOT v_owner_admitted THEN
        EXECUTE format('ALTER POLICY tenant_fence ON %s USING (%s OR %s)', p_table, v_fence, v_admit);
        IF NOT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = p_table AND polname = 'retention_read') THEN
            EXECUTE format('CREATE POLICY retention_read ON %s AS PERMISSIVE FOR SELECT USING (%s)',
                           p_table, v_admit);
            EXECUTE format('CREATE POLICY retention_purge ON %s AS PERMISSIVE FOR DELETE USING (%s)',
                           p_table, v_admit);
        END IF;
    END IF;
END
$$;

-- Deletes up to p_limit rows of one registered table that match its condition; the number deleted.
-- Refuses a cutoff that is not at least a day in the past (a swapped or future date must fail instead of
-- deleting live rows) and any table that has no policy.
CREATE FUNCTION retention.purge_batch(p_table regclass, p_cutoff timestamptz, p_now timestamptz, p_limit integer)
    RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_condition text;
    v_deleted bigint;
BEGIN
    IF p_cutoff IS NULL OR p_now IS NULL OR p_cutoff > p_now - interval '1 day' OR p_now > now() + interval '1 day' THEN
        RAISE EXCEPTION 'retention cutoff % must be at least a day before %, and that not in the future',
                        p_cutoff, p_now USING ERRCODE = '22023';
    END IF;
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 100000 THEN
        RAISE EXCEPTION 'p_limit must be between 1 and 100000, got %', p_limit USING ERRCODE = '22023';
    END IF;
    SELECT condition INTO v_condition FROM internal.retention_policies WHERE relation = p_table;
    IF v_condition IS NULL THEN
        RAISE EXCEPTION '% has no retention policy', p_table USING ERRCODE = '22023';
    END IF;
    -- (tableoid, ctid) names a row of any partition. No FOR UPDATE SKIP LOCKED: under RLS it would need an
    -- UPDATE policy for the run, and rows past retention are not being worked on anyway. The mark admits
    -- this transaction past the registered tables' fences for this one statement (an error rolls it back).
    INSERT INTO internal.retention_active (xact) VALUES (pg_current_xact_id());
    EXECUTE format('DELETE FROM %1$s t WHERE (t.tableoid, t.ctid) IN ('
                   'SELECT s.tableoid, s.ctid FROM %1$s s WHERE %2$s LIMIT $3)',
                   p_table, v_condition)
        USING p_cutoff, p_now, p_limit;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    DELETE FROM internal.retention_active WHERE xact = pg_current_xact_id();
    RETURN v_deleted;
END
$$;
REVOKE ALL ON FUNCTION retention.purge_batch(regclass, timestamptz, timestamptz, integer) FROM PUBLIC;

-- One retention run of every registered table, in batches committed one by one; records each table's run
-- in retention.runs and fails at the end (after the other tables ran) when one table failed. Must be
-- CALLed outside a transaction block (pg_cron and `python -m modules.postgres.retention` do). No SET
-- clause (a procedure with one cannot COMMIT): every name is qualified, and it runs as its caller, who
-- needs the owner's rights anyway (retention.purge_batch, retention.runs).
CREATE PROCEDURE retention.run(p_days integer, p_batch integer DEFAULT 5000, p_now timestamptz DEFAULT NULL)
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, pg_catalog.now());
    v_cutoff timestamptz;
    v_policy record;
    v_started timestamptz;
    v_deleted bigint;
    v_total bigint;
    v_batches integer;
    v_error text;
    v_failed text[] := '{}';
BEGIN
    IF p_days IS NULL OR p_days < 1 THEN
        RAISE EXCEPTION 'p_days must be at least 1, got %', p_days USING ERRCODE = '22023';
    END IF;
    v_cutoff := v_now - pg_catalog.make_interval(days => p_days);
    FOR v_policy IN
        SELECT p.relation, p.relation::text AS name, p.tier
          FROM internal.retention_policies p ORDER BY p.position, p.relation::text
    LOOP
        v_started := pg_catalog.clock_timestamp();
        v_total := 0;
        v_batches := 0;
        v_error := NULL;
        LOOP
            <<one_batch>>
            BEGIN
                v_deleted := retention.purge_batch(v_policy.relation, v_cutoff, v_now, p_batch);
            EXCEPTION WHEN OTHERS THEN
                v_error := SQLERRM;
                v_deleted := 0;
            END one_batch;
            v_total := v_total + v_deleted;
            v_batches := v_batches + 1;
            COMMIT AND NO CHAIN;  -- (spelt out: migrations refuse a bare one, see migrations.TX_CONTROL_RE)
            EXIT WHEN v_error IS NOT NULL OR v_deleted < p_batch;
        END LOOP;
        INSERT INTO retention.runs (tier, table_name, cutoff, deleted, batches, status, detail, started_at,
                                    finished_at)
        VALUES (v_policy.tier, v_policy.name, v_cutoff, v_total, v_batches,
                CASE WHEN v_error IS NULL THEN 'succeeded' ELSE 'failed' END, pg_catalog.left(v_error, 1000),
                v_started, pg_catalog.clock_timestamp());
        COMMIT AND NO CHAIN;
        IF v_error IS NOT NULL THEN
            v_failed := v_failed || v_policy.name;
        END IF;
    END LOOP;
    IF pg_catalog.cardinality(v_failed) > 0 THEN
        RAISE EXCEPTION 'retention failed for %; see retention.runs', pg_catalog.array_to_string(v_failed, ', ');
    END IF;
END
$$;
REVOKE ALL ON PROCEDURE retention.run(integer, integer, timestamptz) FROM PUBLIC;
