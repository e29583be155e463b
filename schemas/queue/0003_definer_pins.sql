-- SECURITY DEFINER functions pin search_path with pg_temp last.
--
-- A function that runs as the tables' owner must not let a caller's objects stand in for its own. With
-- search_path = pg_catalog alone, PostgreSQL still searches the caller's temporary schema first (for tables
-- and types), so 0002's three owner-rights functions are re-pinned here; migrations refuse any new one that
-- is not pinned this way (modules/postgres/catalog.py, definer_problems).
ALTER FUNCTION app.dequeue_jobs(text, text, integer) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION app.complete_job(uuid, uuid, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION app.fail_job(uuid, uuid, text, text) SET search_path = pg_catalog, pg_temp;
