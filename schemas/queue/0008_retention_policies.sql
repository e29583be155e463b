-- Queue history retention by row (schemas/shared/retention.sql): failed-attempt logs and dead letters older
-- than the tier's data_retention_days. Finished jobs go by their day partitions (0006); due and scheduled
-- jobs are live work and are never deleted by retention. The queue's tables admit their owner already
-- (0004), so the retention run needs no policy of its own here.

SELECT internal.register_retention_policy('app.job_failures', 'queue', 'failed_at < $1', 10);
SELECT internal.register_retention_policy('app.dead_letters', 'queue', 'died_at < $1', 20);
