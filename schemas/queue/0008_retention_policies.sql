-- Queue history retention by row (schemas/shared/retention.sql): failed-attempt logs and dead letters older
-- than the tier's data_retention_days. Finished jobs go by their day partitions (0006); due and scheduled
-- jobs are live work and are never deleted by retention. The queue's tables admit their owner already
-- (0004), so the retention run needs no policy of its own here.

SELECT internal.register_retention_policy('app.job_failures', 'queue', 'failed_at < $1', 10);
SELECT internal.register_retention_policy('app.dead_letters', 'queue', 'died_at < $1', 20);

-- The run deletes by age across tenants; without this it would scan the whole log for every batch.
CREATE INDEX job_failures_failed_at_idx ON app.job_failures (failed_at);
COMMENT ON INDEX app.job_failures_failed_at_idx IS 'cross-tenant: row retention deletes failure logs by age';
