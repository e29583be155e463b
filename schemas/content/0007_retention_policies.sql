-- Content retention by row (schemas/shared/retention.sql): a body goes when it is older than the tier's
-- data_retention_days or past its own expires_at (the lifecycle workers' retention hint); attachments of
-- bodies past the cutoff go first and are counted on their own (those of bodies that only expired go with
-- their body, by the foreign key's ON DELETE CASCADE). Whole months older than the partition policy (0005)
-- are still dropped by partition maintenance.

SELECT internal.register_retention_policy('app.attachments', 'content', 'content_created_at < $1', 10);
SELECT internal.register_retention_policy('app.content_objects', 'content',
                                          'created_at < $1 OR expires_at <= $2', 20);
