-- The durable job queue: queues, jobs, per-attempt logs and dead letters.
--
-- Tenants enqueue their own jobs (RLS as everywhere). Workers claim jobs of every tenant, and they do it only
-- through the SECURITY DEFINER functions below, which run as the tables' owner: the fence of these three
-- tables admits the owner, and nobody else, beyond the current tenant. The application role is never the
-- owner, so outside these functions it sees its tenant's jobs only.
--
-- Lifecycle: queued → running (claimed, locked_until set) → completed; a failure goes back to queued with
-- a capped exponential backoff (retry_base · 2^(attempt-1), at most retry_cap) until max_attempts, then the
-- job moves to dead_letters. A running job whose lock expired (dead worker) counts as a failed attempt.
-- Priority: lower runs first (the docs route ≤50 to :high and >150 to :low).

CREATE TABLE platform.job_queues (
    name              varchar(100) PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9:_-]*$'),
    default_priority  integer NOT NULL DEFAULT 100 CHECK (default_priority BETWEEN 0 AND 1000),
    max_attempts      integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 100),
    retry_base        interval NOT NULL DEFAULT '2 seconds' CHECK (retry_base > interval '0'),
    retry_cap         interval NOT NULL DEFAULT '5 minutes' CHECK (retry_cap > interval '0'),
    lock_duration     interval NOT NULL DEFAULT '5 minutes' CHECK (lock_duration > interval '0'),
    is_active         boolean NOT NULL DEFAULT true,
    created           timestamptz NOT NULL DEFAULT now(),
    updated           timestamptz NOT NULL DEFAULT now()
);

INSERT INTO platform.job_queues (name, default_priority) VALUES
    ('email-sending', 100), ('email-processing', 75), ('analytics', 150),
    ('warmup', 75), ('bounce', 75), ('webhook', 100);

CREATE TABLE app.jobs (
    tenant_id     uuid NOT NULL,
    id            uuid NOT NULL DEFAULT gen_random_uuid(),
    queue_name    varchar(100) NOT NULL REFERENCES platform.job_queues (name),
    status        varchar(20) NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'completed')),
    priority      integer NOT NULL DEFAULT 100 CHECK (priority BETWEEN 0 AND 1000),
    payload       jsonb NOT NULL DEFAULT '{}',
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts  integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    run_at        timestamptz NOT NULL DEFAULT now(),
    locked_until  timestamptz,
    locked_by     text,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at    timestamptz,
    completed_at  timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CHECK (status <> 'running' OR locked_until IS NOT NULL)
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

-- The claim path is cross-tenant by design, so these two indexes are the only ones not led by tenant_id.
CREATE INDEX jobs_claim_idx ON app.jobs (queue_name, priority, run_at) WHERE status = 'queued';
COMMENT ON INDEX app.jobs_claim_idx IS 'cross-tenant: workers claim the next job of a queue whatever its tenant';
CREATE INDEX jobs_expired_lock_idx ON app.jobs (queue_name, locked_until) WHERE status = 'running';
COMMENT ON INDEX app.jobs_expired_lock_idx IS 'cross-tenant: finds jobs whose worker died, whatever their tenant';
CREATE INDEX idx_jobs_tenant_status ON app.jobs (tenant_id, status, created_at DESC);

CREATE TABLE app.job_logs (
    tenant_id       uuid NOT NULL,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    job_id          uuid NOT NULL,
    status          varchar(20) NOT NULL CHECK (status IN ('success', 'retry', 'failed')),
    attempt_number  integer NOT NULL CHECK (attempt_number >= 1),
    worker          text,
    started         timestamptz,
    finished        timestamptz NOT NULL DEFAULT clock_timestamp(),
    duration        interval,
    error_message   text,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX idx_job_logs_tenant_job ON app.job_logs (tenant_id, job_id);

CREATE TABLE app.dead_letters (
    tenant_id     uuid NOT NULL,
    id            uuid NOT NULL,
    queue_name    varchar(100) NOT NULL,
    priority      integer NOT NULL,
    payload       jsonb NOT NULL,
    attempts      integer NOT NULL,
    max_attempts  integer NOT NULL,
    last_error    text,
    enqueued_at   timestamptz NOT NULL,
    died_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX idx_dead_letters_tenant_died ON app.dead_letters (tenant_id, died_at DESC);

-- True inside a function owned by the table's owner (SECURITY DEFINER), or for the owner itself.
CREATE FUNCTION app_private.is_owner_of(p_table regclass) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$ SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
                         WHERE c.oid = p_table AND r.rolname = current_user) $$;

DO $$
DECLARE
    v_table text;
    v_check text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['app.jobs', 'app.job_logs', 'app.dead_letters'] LOOP
        PERFORM internal.enable_tenant_rls(v_table::regclass);
        v_check := format('tenant_id = (SELECT app_private.current_tenant_id()) OR (SELECT app_private.is_owner_of(%L::regclass))',
                          v_table);
        EXECUTE format('ALTER POLICY tenant_fence ON %s USING (%s) WITH CHECK (%s)', v_table, v_check, v_check);
        EXECUTE format('ALTER POLICY tenant_access ON %s USING (%s) WITH CHECK (%s)', v_table, v_check, v_check);
    END LOOP;
END
$$;

-- Wake LISTENing workers when a job becomes runnable (identical payloads fold into one per transaction).
CREATE FUNCTION app_private.notify_job_ready() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('penguinmails_jobs', NEW.queue_name);
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_notify_ready AFTER INSERT OR UPDATE OF status, run_at ON app.jobs
    FOR EACH ROW WHEN (NEW.status = 'queued' AND NEW.run_at <= now())
    EXECUTE FUNCTION app_private.notify_job_ready();

-- Enqueue for the current tenant (invoker rights: RLS checks the row like any insert).
CREATE FUNCTION app.enqueue_job(p_queue text, p_payload jsonb DEFAULT '{}', p_priority integer DEFAULT NULL,
                                p_run_at timestamptz DEFAULT NULL, p_max_attempts integer DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plpgsql
    SET search_path = pg_catalog
    AS $$
DECLARE
    v_tenant constant uuid := app_private.current_tenant_id();
    v_queue platform.job_queues;
    v_id uuid;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'app.tenant_id is not set: enqueue inside a tenant transaction' USING ERRCODE = '42501';
    END IF;
    SELECT * INTO v_queue FROM platform.job_queues WHERE name = p_queue AND is_active;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'queue % does not exist or is inactive', p_queue USING ERRCODE = '22023';
    END IF;
    INSERT INTO app.jobs (tenant_id, queue_name, priority, payload, max_attempts, run_at)
    VALUES (v_tenant, p_queue, coalesce(p_priority, v_queue.default_priority), coalesce(p_payload, '{}'),
            coalesce(p_max_attempts, v_queue.max_attempts), coalesce(p_run_at, now()))
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

-- Retry with capped exponential backoff, or bury in dead_letters after max_attempts. Runs as the owner.
CREATE FUNCTION internal.retry_or_bury(p_job app.jobs, p_error text, p_worker text) RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog
    AS $$
DECLARE
    v_base interval;
    v_cap interval;
    v_delay interval;
BEGIN
    IF p_job.attempts >= p_job.max_attempts THEN
        DELETE FROM app.jobs WHERE tenant_id = p_job.tenant_id AND id = p_job.id;
        INSERT INTO app.dead_letters (tenant_id, id, queue_name, priority, payload, attempts, max_attempts,
                                      last_error, enqueued_at)
        VALUES (p_job.tenant_id, p_job.id, p_job.queue_name, p_job.priority, p_job.payload, p_job.attempts,
                p_job.max_attempts, p_error, p_job.created_at);
        INSERT INTO app.job_logs (tenant_id, job_id, status, attempt_number, worker, started, duration, error_message)
        VALUES (p_job.tenant_id, p_job.id, 'failed', p_job.attempts, p_worker, p_job.started_at,
                clock_timestamp() - p_job.started_at, p_error);
        RETURN 'dead';
    END IF;
    SELECT retry_base, retry_cap INTO v_base, v_cap FROM platform.job_queues WHERE name = p_job.queue_name;
    v_delay := least(v_base * (2 ^ least(greatest(p_job.attempts - 1, 0), 30))::double precision, v_cap);
    UPDATE app.jobs
       SET status = 'queued', run_at = now() + v_delay, locked_by = NULL, locked_until = NULL,
           last_error = p_error, updated_at = now()
     WHERE tenant_id = p_job.tenant_id AND id = p_job.id;
    INSERT INTO app.job_logs (tenant_id, job_id, status, attempt_number, worker, started, duration, error_message)
    VALUES (p_job.tenant_id, p_job.id, 'retry', p_job.attempts, p_worker, p_job.started_at,
            clock_timestamp() - p_job.started_at, p_error);
    RETURN 'retry';
END
$$;

-- Claim up to p_limit runnable jobs of a queue, best priority first, skipping rows other workers hold.
CREATE FUNCTION app.dequeue_jobs(p_queue text, p_worker text, p_limit integer DEFAULT 1)
    RETURNS SETOF app.jobs
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog
    AS $$
DECLARE
    v_lock interval;
    v_expired app.jobs;
BEGIN
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1000 THEN
        RAISE EXCEPTION 'p_limit must be between 1 and 1000, got %', p_limit USING ERRCODE = '22023';
    END IF;
    IF coalesce(p_worker, '') = '' THEN
        RAISE EXCEPTION 'p_worker must name the worker' USING ERRCODE = '22023';
    END IF;
    SELECT lock_duration INTO v_lock FROM platform.job_queues WHERE name = p_queue AND is_active;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Jobs of dead workers: their attempt failed.
    FOR v_expired IN
        SELECT * FROM app.jobs
         WHERE queue_name = p_queue AND status = 'running' AND locked_until < now()
         ORDER BY locked_until
         LIMIT 100
         FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM internal.retry_or_bury(v_expired, 'lock expired (worker ' || coalesce(v_expired.locked_by, '?') || ')',
                                       v_expired.locked_by);
    END LOOP;
    RETURN QUERY
    WITH claimable AS MATERIALIZED (
        SELECT c.tenant_id, c.id
          FROM app.jobs c
         WHERE c.queue_name = p_queue AND c.status = 'queued' AND c.run_at <= now()
         ORDER BY c.priority, c.run_at
         LIMIT p_limit
         FOR UPDATE SKIP LOCKED
    )
    UPDATE app.jobs j
       SET status = 'running', attempts = j.attempts + 1, locked_by = p_worker,
           locked_until = now() + v_lock, started_at = clock_timestamp(), updated_at = now()
      FROM claimable
     WHERE j.tenant_id = claimable.tenant_id AND j.id = claimable.id
    RETURNING j.*;
END
$$;

-- Finish a claimed job; false when this worker no longer holds it (its lock expired and it was reclaimed).
CREATE FUNCTION app.complete_job(p_tenant_id uuid, p_job_id uuid, p_worker text) RETURNS boolean
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog
    AS $$
DECLARE
    v_job app.jobs;
BEGIN
    UPDATE app.jobs
       SET status = 'completed', completed_at = clock_timestamp(), locked_until = NULL, updated_at = now()
     WHERE tenant_id = p_tenant_id AND id = p_job_id AND status = 'running' AND locked_by = p_worker
    RETURNING * INTO v_job;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO app.job_logs (tenant_id, job_id, status, attempt_number, worker, started, duration)
    VALUES (v_job.tenant_id, v_job.id, 'success', v_job.attempts, p_worker, v_job.started_at,
            v_job.completed_at - v_job.started_at);
    RETURN true;
END
$$;

-- Report a failed attempt: 'retry' (back in the queue after the backoff), 'dead' (moved to dead_letters),
-- or 'lost' when this worker no longer holds the job.
CREATE FUNCTION app.fail_job(p_tenant_id uuid, p_job_id uuid, p_worker text, p_error text) RETURNS text
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog
    AS $$
DECLARE
    v_job app.jobs;
BEGIN
    SELECT * INTO v_job FROM app.jobs
     WHERE tenant_id = p_tenant_id AND id = p_job_id AND status = 'running' AND locked_by = p_worker
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'lost';
    END IF;
    RETURN internal.retry_or_bury(v_job, left(coalesce(p_error, 'unknown error'), 4000), p_worker);
END
$$;

-- Put a dead letter of the current tenant back in its queue with fresh attempts (invoker rights).
CREATE FUNCTION app.replay_dead_letter(p_job_id uuid) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog
    AS $$
DECLARE
    v_dead app.dead_letters;
BEGIN
    DELETE FROM app.dead_letters
     WHERE tenant_id = app_private.current_tenant_id() AND id = p_job_id
    RETURNING * INTO v_dead;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO app.jobs (tenant_id, id, queue_name, priority, payload, max_attempts, created_at)
    VALUES (v_dead.tenant_id, v_dead.id, v_dead.queue_name, v_dead.priority, v_dead.payload,
            v_dead.max_attempts, v_dead.enqueued_at);
    RETURN true;
END
$$;

-- Retention (docs: completed jobs 6 months, logs 90 days); run by the owner's maintenance job.
CREATE FUNCTION internal.purge_finished_jobs(p_completed_before timestamptz, p_logs_before timestamptz)
    RETURNS bigint
    LANGUAGE sql
    SET search_path = pg_catalog
    AS $$
    WITH jobs AS (DELETE FROM app.jobs WHERE status = 'completed' AND completed_at < p_completed_before RETURNING 1),
         logs AS (DELETE FROM app.job_logs WHERE finished < p_logs_before RETURNING 1)
    SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM logs)
$$;
