-- Email bodies and attachments, partitioned by month so retention drops whole partitions (no DELETE bloat).
--
-- The OLTP tier keeps only storage_key (no foreign key across databases). The partition key is part of every
-- key, so a reference is (tenant_id, storage_key, created_at). Partitions live in schema `partitions`, which
-- the application roles cannot use: every read and write goes through the parent tables, whose policies
-- apply; each partition is also fenced on its own in case it is ever granted by mistake.

CREATE SCHEMA partitions;

CREATE TABLE app.content_objects (
    tenant_id              uuid NOT NULL,
    storage_key            varchar(500) NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    content_text           text,
    content_html           text,
    headers                jsonb NOT NULL DEFAULT '{}',
    raw_size_bytes         bigint CHECK (raw_size_bytes >= 0),
    expires_at             timestamptz,
    last_accessed_at       timestamptz,
    content_hash           varchar(64),
    compression_algorithm  varchar(20) CHECK (compression_algorithm IN ('lz4', 'zstd', 'pglz', 'none')),
    compressed_size_bytes  bigint CHECK (compressed_size_bytes >= 0),
    PRIMARY KEY (tenant_id, storage_key, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX idx_content_objects_tenant_expires ON app.content_objects (tenant_id, expires_at)
    WHERE expires_at IS NOT NULL;
CREATE INDEX idx_content_objects_tenant_hash ON app.content_objects (tenant_id, content_hash)
    WHERE content_hash IS NOT NULL;
SELECT internal.enable_tenant_rls('app.content_objects');

CREATE TABLE app.attachments (
    tenant_id            uuid NOT NULL,
    id                   uuid NOT NULL DEFAULT gen_random_uuid(),
    storage_key          varchar(500) NOT NULL,
    content_created_at   timestamptz NOT NULL,
    filename             varchar(255) NOT NULL,
    mime_type            varchar(255) NOT NULL DEFAULT 'application/octet-stream',
    size_bytes           bigint NOT NULL CHECK (size_bytes >= 0),
    content              bytea NOT NULL,
    storage_disposition  varchar(20) NOT NULL DEFAULT 'attachment'
        CHECK (storage_disposition IN ('inline', 'attachment')),
    created_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id, content_created_at),
    FOREIGN KEY (tenant_id, storage_key, content_created_at)
        REFERENCES app.content_objects (tenant_id, storage_key, created_at) ON DELETE CASCADE
) PARTITION BY RANGE (content_created_at);
CREATE INDEX idx_attachments_parent ON app.attachments (tenant_id, storage_key, content_created_at);
SELECT internal.enable_tenant_rls('app.attachments');

-- lz4 where the server was built with it (Debian's is); pglz otherwise. Partitions inherit the setting.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings
               WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE app.content_objects ALTER COLUMN content_text SET COMPRESSION lz4;
        ALTER TABLE app.content_objects ALTER COLUMN content_html SET COMPRESSION lz4;
        ALTER TABLE app.content_objects ALTER COLUMN headers SET COMPRESSION lz4;
        ALTER TABLE app.attachments ALTER COLUMN content SET COMPRESSION lz4;
    ELSE
        RAISE NOTICE 'lz4 is not available on this server; content keeps pglz compression';
    END IF;
END
$$;

-- Creates the monthly partitions of both tables for [p_from's month, + p_months), fenced like their parents.
-- Idempotent; a maintenance job (owner role) runs it ahead of time, and retention drops old months.
CREATE FUNCTION internal.ensure_content_partitions(p_from date DEFAULT current_date, p_months integer DEFAULT 3)
    RETURNS SETOF text
    LANGUAGE plpgsql
    SET search_path = pg_catalog
    AS $$
DECLARE
    v_month date;
    v_name text;
    v_parent text;
BEGIN
    IF p_months < 1 OR p_months > 36 THEN
        RAISE EXCEPTION 'p_months must be between 1 and 36, got %', p_months;
    END IF;
    FOR i IN 0 .. p_months - 1 LOOP
        v_month := (date_trunc('month', p_from) + make_interval(months => i))::date;
        FOREACH v_parent IN ARRAY ARRAY['content_objects', 'attachments'] LOOP
            v_name := format('%s_%s', v_parent, to_char(v_month, 'YYYY_MM'));
            CONTINUE WHEN to_regclass(format('partitions.%I', v_name)) IS NOT NULL;
            EXECUTE format('CREATE TABLE partitions.%I PARTITION OF app.%I FOR VALUES FROM (%L) TO (%L)',
                           v_name, v_parent, v_month, (v_month + interval '1 month')::date);
            PERFORM internal.enable_tenant_rls(format('partitions.%I', v_name)::regclass);
            RETURN NEXT v_name;
        END LOOP;
    END LOOP;
END
$$;

-- Retention: detaches and drops every month that ends on or before p_before (attachments first, since they
-- reference the bodies). Returns the dropped partitions.
CREATE FUNCTION internal.drop_content_partitions_before(p_before date)
    RETURNS SETOF text
    LANGUAGE plpgsql
    SET search_path = pg_catalog
    AS $$
DECLARE
    v_part record;
BEGIN
    FOR v_part IN
        SELECT c.relname, p.relname AS parent,
               (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS upper
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        JOIN pg_namespace pn ON pn.oid = p.relnamespace
        WHERE pn.nspname = 'app' AND p.relname IN ('attachments', 'content_objects')
        ORDER BY (p.relname = 'content_objects'), c.relname
    LOOP
        CONTINUE WHEN v_part.upper > p_before;
        EXECUTE format('ALTER TABLE app.%I DETACH PARTITION partitions.%I', v_part.parent, v_part.relname);
        EXECUTE format('DROP TABLE partitions.%I', v_part.relname);
        RETURN NEXT v_part.relname;
    END LOOP;
END
$$;

-- Batch helper for the lifecycle worker: how many of a tenant's objects are past their retention.
CREATE FUNCTION app.count_expired_content(p_now timestamptz DEFAULT now()) RETURNS bigint
    LANGUAGE sql STABLE
    AS $$ SELECT count(*) FROM app.content_objects
          WHERE tenant_id = (SELECT app_private.current_tenant_id()) AND expires_at <= p_now $$;

-- Partitions for the last month, this month and the next ones, so fresh rows always have a home.
SELECT internal.ensure_content_partitions((current_date - interval '1 month')::date, 4);
