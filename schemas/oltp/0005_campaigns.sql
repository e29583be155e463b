-- Leads, templates (with folders and tags), campaigns and their sequence steps.
--
-- Gaps fixed: the template helper tables and campaign_sequence_steps carry tenant_id and RLS (the docs give
-- them no policy, and sequence steps no tenant at all). Bodies live in the Content tier: templates keep only
-- the opaque content_storage_key (no foreign key across databases).

CREATE TABLE app.leads (
    tenant_id      uuid NOT NULL REFERENCES app.tenants (tenant_id) ON DELETE CASCADE,
    id             uuid NOT NULL DEFAULT gen_random_uuid(),
    email          citext NOT NULL,
    name           varchar(255),
    company        varchar(255),
    status         varchar(20) NOT NULL DEFAULT 'new'
        CHECK (status IN ('new', 'contacted', 'replied', 'bounced', 'unsubscribed', 'converted')),
    custom_fields  jsonb NOT NULL DEFAULT '{}',
    created        timestamptz NOT NULL DEFAULT now(),
    updated        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, email)
);
CREATE INDEX idx_leads_tenant_status_updated ON app.leads (tenant_id, status, updated DESC);
SELECT internal.enable_tenant_rls('app.leads');

CREATE TABLE app.templates (
    tenant_id            uuid NOT NULL REFERENCES app.tenants (tenant_id) ON DELETE CASCADE,
    id                   uuid NOT NULL DEFAULT gen_random_uuid(),
    name                 varchar(255) NOT NULL,
    subject              text,
    content              text,
    content_storage_key  varchar(500),
    is_started           boolean NOT NULL DEFAULT false,
    created              timestamptz NOT NULL DEFAULT now(),
    updated              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);
SELECT internal.enable_tenant_rls('app.templates');

CREATE TABLE app.folders (
    tenant_id  uuid NOT NULL REFERENCES app.tenants (tenant_id) ON DELETE CASCADE,
    id         bigint GENERATED ALWAYS AS IDENTITY,
    parent_id  bigint,
    name       varchar(255) NOT NULL,
    created    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, parent_id, name),
    FOREIGN KEY (tenant_id, parent_id) REFERENCES app.folders (tenant_id, id) ON DELETE CASCADE
);
SELECT internal.enable_tenant_rls('app.folders');

CREATE TABLE app.tags (
    tenant_id  uuid NOT NULL REFERENCES app.tenants (tenant_id) ON DELETE CASCADE,
    id         bigint GENERATED ALWAYS AS IDENTITY,
    name       varchar(100) NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);
SELECT internal.enable_tenant_rls('app.tags');

CREATE TABLE app.template_folders (
    tenant_id    uuid NOT NULL,
    template_id  uuid NOT NULL,
    folder_id    bigint NOT NULL,
    PRIMARY KEY (tenant_id, template_id, folder_id),
    FOREIGN KEY (tenant_id, template_id) REFERENCES app.templates (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, folder_id) REFERENCES app.folders (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX idx_template_folders_folder ON app.template_folders (tenant_id, folder_id);
SELECT internal.enable_tenant_rls('app.template_folders');

CREATE TABLE app.template_tags (
    tenant_id    uuid NOT NULL,
    template_id  uuid NOT NULL,
    tag_id       bigint NOT NULL,
    PRIMARY KEY (tenant_id, template_id, tag_id),
    FOREIGN KEY (tenant_id, template_id) REFERENCES app.templates (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, tag_id) REFERENCES app.tags (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX idx_template_tags_tag ON app.template_tags (tenant_id, tag_id);
SELECT internal.enable_tenant_rls('app.template_tags');

CREATE TABLE app.email_templates (
    tenant_id  uuid NOT NULL REFERENCES app.tenants (tenant_id) ON DELETE CASCADE,
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    name       varchar(255) NOT NULL,
    subject    text,
    body_eta   text NOT NULL,
    created    timestamptz NOT NULL DEFAULT now(),
    updated    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);
SELECT internal.enable_tenant_rls('app.email_templates');

CREATE TABLE app.campaigns (
    tenant_id    uuid NOT NULL REFERENCES app.tenants (tenant_id) ON DELETE CASCADE,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    company_id   uuid,
    name         varchar(255) NOT NULL,
    description  text,
    status       varchar(20) NOT NULL DEFAULT 'draft'
        CHECK (status IN ('draft', 'scheduled', 'sending', 'completed', 'paused')),
    scheduled    timestamptz,
    completed    timestamptz,
    created      timestamptz NOT NULL DEFAULT now(),
    updated      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, company_id) REFERENCES app.companies (tenant_id, id) ON DELETE SET NULL (company_id)
);
CREATE INDEX idx_campaigns_tenant_status_created ON app.campaigns (tenant_id, status, created DESC);
CREATE INDEX idx_campaigns_tenant_created ON app.campaigns (tenant_id, created DESC);
SELECT internal.enable_tenant_rls('app.campaigns');

CREATE TABLE app.campaign_sequence_steps (
    tenant_id         uuid NOT NULL,
    id                uuid NOT NULL DEFAULT gen_random_uuid(),
    campaign_id       uuid NOT NULL,
    step_order        integer NOT NULL CHECK (step_order >= 1),
    step_type         varchar(20) NOT NULL CHECK (step_type IN ('email', 'wait', 'condition')),
    email_account_id  uuid,
    template_id       uuid,
    wait_days         integer CHECK (wait_days >= 0),
    condition_type    varchar(50),
    condition_value   jsonb,
    created           timestamptz NOT NULL DEFAULT now(),
    updated           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, campaign_id, step_order),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES app.campaigns (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, email_account_id)
        REFERENCES app.email_accounts (tenant_id, id) ON DELETE SET NULL (email_account_id),
    FOREIGN KEY (tenant_id, template_id) REFERENCES app.templates (tenant_id, id) ON DELETE SET NULL (template_id)
);
SELECT internal.enable_tenant_rls('app.campaign_sequence_steps');
