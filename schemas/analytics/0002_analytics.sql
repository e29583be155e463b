-- Rollup tables loaded by the nightly batch (about 02:00 UTC) and read by dashboards.
--
-- Gaps fixed: the docs key these tables by a TEXT tenant id; here it is tenant_id uuid NOT NULL, first in
-- every key, and billing_id references are composite (tenant_id, billing_id). Ids of OLTP objects
-- (campaign_id, mailbox_id, …) are logical references: there are no foreign keys across databases.
-- Rollups are plain tables (materialized views cannot carry RLS).

CREATE TABLE app.billing_analytics (
    tenant_id        uuid NOT NULL,
    id               bigint GENERATED ALWAYS AS IDENTITY,
    subscription_id  uuid,
    emails_sent      bigint NOT NULL DEFAULT 0 CHECK (emails_sent >= 0),
    mailboxes_used   integer NOT NULL DEFAULT 0 CHECK (mailboxes_used >= 0),
    domains_used     integer NOT NULL DEFAULT 0 CHECK (domains_used >= 0),
    campaigns_used   integer NOT NULL DEFAULT 0 CHECK (campaigns_used >= 0),
    leads_used       integer NOT NULL DEFAULT 0 CHECK (leads_used >= 0),
    warmups_active   integer NOT NULL DEFAULT 0 CHECK (warmups_active >= 0),
    period_start     date NOT NULL,
    period_end       date NOT NULL,
    updated          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, period_start, period_end),
    CHECK (period_end >= period_start)
);
SELECT internal.enable_tenant_rls('app.billing_analytics');

-- The shared counter set of every per-object rollup.
CREATE TABLE app.campaign_analytics (
    tenant_id        uuid NOT NULL,
    id               bigint GENERATED ALWAYS AS IDENTITY,
    campaign_id      uuid NOT NULL,
    company_id       uuid,
    period_start     date NOT NULL,
    sent             bigint NOT NULL DEFAULT 0,
    delivered        bigint NOT NULL DEFAULT 0,
    opened_tracked   bigint NOT NULL DEFAULT 0,
    clicked_tracked  bigint NOT NULL DEFAULT 0,
    replied          bigint NOT NULL DEFAULT 0,
    bounced          bigint NOT NULL DEFAULT 0,
    unsubscribed     bigint NOT NULL DEFAULT 0,
    spam_complaints  bigint NOT NULL DEFAULT 0,
    status           varchar(20),
    completed_leads  bigint NOT NULL DEFAULT 0,
    billing_id       bigint,
    updated          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, campaign_id, period_start),
    FOREIGN KEY (tenant_id, billing_id) REFERENCES app.billing_analytics (tenant_id, id) ON DELETE SET NULL (billing_id)
);
CREATE INDEX idx_campaign_analytics_billing ON app.campaign_analytics (tenant_id, billing_id);
SELECT internal.enable_tenant_rls('app.campaign_analytics');

CREATE TABLE app.mailbox_analytics (
    tenant_id        uuid NOT NULL,
    id               bigint GENERATED ALWAYS AS IDENTITY,
    mailbox_id       uuid NOT NULL,
    company_id       uuid,
    period_start     date NOT NULL,
    sent             bigint NOT NULL DEFAULT 0,
    delivered        bigint NOT NULL DEFAULT 0,
    opened_tracked   bigint NOT NULL DEFAULT 0,
    clicked_tracked  bigint NOT NULL DEFAULT 0,
    replied          bigint NOT NULL DEFAULT 0,
    bounced          bigint NOT NULL DEFAULT 0,
    unsubscribed     bigint NOT NULL DEFAULT 0,
    spam_complaints  bigint NOT NULL DEFAULT 0,
    warmup_status    varchar(20),
    health_score     numeric(5, 2) CHECK (health_score BETWEEN 0 AND 100),
    current_volume   integer CHECK (current_volume >= 0),
    billing_id       bigint,
    updated          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, mailbox_id, period_start),
    FOREIGN KEY (tenant_id, billing_id) REFERENCES app.billing_analytics (tenant_id, id) ON DELETE SET NULL (billing_id)
);
CREATE INDEX idx_mailbox_analytics_billing ON app.mailbox_analytics (tenant_id, billing_id);
SELECT internal.enable_tenant_rls('app.mailbox_analytics');

CREATE TABLE app.lead_analytics (
    tenant_id        uuid NOT NULL,
    id               bigint GENERATED ALWAYS AS IDENTITY,
    lead_id          uuid NOT NULL,
    campaign_id      uuid NOT NULL,
    period_start     date NOT NULL,
    sent             bigint NOT NULL DEFAULT 0,
    delivered        bigint NOT NULL DEFAULT 0,
    opened_tracked   bigint NOT NULL DEFAULT 0,
    clicked_tracked  bigint NOT NULL DEFAULT 0,
    replied          bigint NOT NULL DEFAULT 0,
    bounced          bigint NOT NULL DEFAULT 0,
    unsubscribed     bigint NOT NULL DEFAULT 0,
    spam_complaints  bigint NOT NULL DEFAULT 0,
    billing_id       bigint,
    updated          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, lead_id, campaign_id, period_start),
    FOREIGN KEY (tenant_id, billing_id) REFERENCES app.billing_analytics (tenant_id, id) ON DELETE SET NULL (billing_id)
);
CREATE INDEX idx_lead_analytics_campaign ON app.lead_analytics (tenant_id, campaign_id);
CREATE INDEX idx_lead_analytics_billing ON app.lead_analytics (tenant_id, billing_id);
SELECT internal.enable_tenant_rls('app.lead_analytics');

CREATE TABLE app.warmup_analytics (
    tenant_id            uuid NOT NULL,
    id                   bigint GENERATED ALWAYS AS IDENTITY,
    mailbox_id           uuid NOT NULL,
    period_start         date NOT NULL,
    sent                 bigint NOT NULL DEFAULT 0,
    delivered            bigint NOT NULL DEFAULT 0,
    opened_tracked       bigint NOT NULL DEFAULT 0,
    clicked_tracked      bigint NOT NULL DEFAULT 0,
    replied              bigint NOT NULL DEFAULT 0,
    bounced              bigint NOT NULL DEFAULT 0,
    unsubscribed         bigint NOT NULL DEFAULT 0,
    spam_complaints      bigint NOT NULL DEFAULT 0,
    health_score         numeric(5, 2) CHECK (health_score BETWEEN 0 AND 100),
    progress_percentage  numeric(5, 2) CHECK (progress_percentage BETWEEN 0 AND 100),
    billing_id           bigint,
    updated              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, mailbox_id, period_start),
    FOREIGN KEY (tenant_id, billing_id) REFERENCES app.billing_analytics (tenant_id, id) ON DELETE SET NULL (billing_id)
);
CREATE INDEX idx_warmup_analytics_billing ON app.warmup_analytics (tenant_id, billing_id);
SELECT internal.enable_tenant_rls('app.warmup_analytics');

CREATE TABLE app.sequence_step_analytics (
    tenant_id        uuid NOT NULL,
    id               bigint GENERATED ALWAYS AS IDENTITY,
    step_id          uuid NOT NULL,
    campaign_id      uuid NOT NULL,
    period_start     date NOT NULL,
    sent             bigint NOT NULL DEFAULT 0,
    delivered        bigint NOT NULL DEFAULT 0,
    opened_tracked   bigint NOT NULL DEFAULT 0,
    clicked_tracked  bigint NOT NULL DEFAULT 0,
    replied          bigint NOT NULL DEFAULT 0,
    bounced          bigint NOT NULL DEFAULT 0,
    unsubscribed     bigint NOT NULL DEFAULT 0,
    spam_complaints  bigint NOT NULL DEFAULT 0,
    billing_id       bigint,
    updated          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, step_id, period_start),
    FOREIGN KEY (tenant_id, billing_id) REFERENCES app.billing_analytics (tenant_id, id) ON DELETE SET NULL (billing_id)
);
CREATE INDEX idx_sequence_step_analytics_campaign ON app.sequence_step_analytics (tenant_id, campaign_id);
CREATE INDEX idx_sequence_step_analytics_billing ON app.sequence_step_analytics (tenant_id, billing_id);
SELECT internal.enable_tenant_rls('app.sequence_step_analytics');

-- Staff actions on a tenant's data (kept 7 years). Written by the platform with the tenant set.
CREATE TABLE app.admin_audit_log (
    tenant_id            uuid NOT NULL,
    id                   bigint GENERATED ALWAYS AS IDENTITY,
    creation_time        timestamptz NOT NULL DEFAULT now(),
    admin_user_id        uuid NOT NULL,
    action               varchar(100) NOT NULL,
    resource_type        varchar(100) NOT NULL,
    resource_id          text,
    old_values           jsonb,
    new_values           jsonb,
    ip_address           inet,
    user_agent           text,
    data_classification  varchar(20) NOT NULL DEFAULT 'internal'
        CHECK (data_classification IN ('public', 'internal', 'confidential', 'restricted')),
    retention_category   varchar(20) NOT NULL DEFAULT 'audit_7y',
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX idx_admin_audit_log_tenant_time ON app.admin_audit_log (tenant_id, creation_time DESC);
SELECT internal.enable_tenant_rls('app.admin_audit_log');
