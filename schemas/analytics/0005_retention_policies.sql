-- Analytics retention by row (schemas/shared/retention.sql): the per-object daily roll-ups (campaign,
-- mailbox, lead, warm-up, sequence step) whose day is older than the tier's data_retention_days. The tier
-- holds no raw events (the nightly batch loads roll-ups directly), so there is nothing to roll up first.
-- billing_analytics (billing periods; payments are kept 7 years) and audit.admin_audit_log (7 years) are
-- not registered: retention never deletes them.

SELECT internal.register_retention_policy('app.lead_analytics', 'analytics',
                                          'period_start < ($1 AT TIME ZONE ''UTC'')::date', 10);
SELECT internal.register_retention_policy('app.sequence_step_analytics', 'analytics',
                                          'period_start < ($1 AT TIME ZONE ''UTC'')::date', 20);
SELECT internal.register_retention_policy('app.warmup_analytics', 'analytics',
                                          'period_start < ($1 AT TIME ZONE ''UTC'')::date', 30);
SELECT internal.register_retention_policy('app.mailbox_analytics', 'analytics',
                                          'period_start < ($1 AT TIME ZONE ''UTC'')::date', 40);
SELECT internal.register_retention_policy('app.campaign_analytics', 'analytics',
                                          'period_start < ($1 AT TIME ZONE ''UTC'')::date', 50);

-- The run deletes by day across tenants; these let each batch find the old days without a full scan.
CREATE INDEX lead_analytics_period_idx ON app.lead_analytics (period_start);
COMMENT ON INDEX app.lead_analytics_period_idx IS 'cross-tenant: row retention deletes old days';
CREATE INDEX sequence_step_analytics_period_idx ON app.sequence_step_analytics (period_start);
COMMENT ON INDEX app.sequence_step_analytics_period_idx IS 'cross-tenant: row retention deletes old days';
CREATE INDEX warmup_analytics_period_idx ON app.warmup_analytics (period_start);
COMMENT ON INDEX app.warmup_analytics_period_idx IS 'cross-tenant: row retention deletes old days';
CREATE INDEX mailbox_analytics_period_idx ON app.mailbox_analytics (period_start);
COMMENT ON INDEX app.mailbox_analytics_period_idx IS 'cross-tenant: row retention deletes old days';
CREATE INDEX campaign_analytics_period_idx ON app.campaign_analytics (period_start);
COMMENT ON INDEX app.campaign_analytics_period_idx IS 'cross-tenant: row retention deletes old days';
