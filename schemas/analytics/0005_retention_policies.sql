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
