-- Bodies and attachments are kept by internal.maintain_partitions() (0004): monthly partitions for this
-- month and three ahead, and months whose whole range is older than the documented content retention
-- ("configurable, 7+ years"; retention_days 2555) are detached and dropped, attachments first.
-- Seven calendar years is never less than 2555 days.

SELECT internal.register_partition_policy('app.content_objects', 'month', 3, interval '7 years', 'YYYY_MM');
SELECT internal.register_partition_policy('app.attachments', 'month', 3, interval '7 years', 'YYYY_MM');

-- The first run, so a tier created now already has its months ahead; the schedule takes over from here.
SELECT count(*) FROM internal.maintain_partitions();
