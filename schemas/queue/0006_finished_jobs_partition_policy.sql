-- Finished jobs (app.finished_jobs, 0004) are kept by internal.maintain_partitions() (0005): daily
-- partitions partitions.finished_jobs_pYYYYMMDD for today and seven days ahead; days whose whole range is
-- older than seven days are detached and dropped.

SELECT internal.register_partition_policy('app.finished_jobs', 'day', 7, interval '7 days', '"p"YYYYMMDD');

-- The first run, so a tier created now already has its days ahead; the schedule takes over from here.
SELECT count(*) FROM internal.maintain_partitions();
