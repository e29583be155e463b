-- Retention never drops the current month or later ones: a wrong date (a future year, a swapped argument)
-- must fail instead of dropping live mail.

CREATE OR REPLACE FUNCTION internal.drop_content_partitions_before(p_before date)
    RETURNS SETOF text
    LANGUAGE plpgsql
    SET search_path = pg_catalog
    AS $$
DECLARE
    v_part record;
BEGIN
    IF p_before IS NULL OR p_before > date_trunc('month', now())::date THEN
        RAISE EXCEPTION 'p_before must be on or before the first day of the current month, got %', p_before
            USING ERRCODE = '22023';
    END IF;
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
