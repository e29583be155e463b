-- Shared reference tables (no tenant): plans, the sending fleet, feature flags; and owner-only staff tables.
-- citext and pgcrypto are created by the Extension resources before any migration runs.

CREATE TABLE platform.plans (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug                  varchar(50) NOT NULL UNIQUE,
    name                  varchar(100) NOT NULL,
    max_users             integer CHECK (max_users >= 0),
    max_domains           integer CHECK (max_domains >= 0),
    max_email_accounts    integer CHECK (max_email_accounts >= 0),
    max_leads             integer CHECK (max_leads >= 0),
    max_campaigns         integer CHECK (max_campaigns >= 0),
    max_emails_per_month  bigint CHECK (max_emails_per_month >= 0),
    stripe_product_id     varchar(255),
    stripe_price_id       varchar(255),
    is_active             boolean NOT NULL DEFAULT true,
    created               timestamptz NOT NULL DEFAULT now(),
    updated               timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE platform.vps_instances (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    hostwinds_instance_id       varchar(255) NOT NULL UNIQUE,
    hostname                    varchar(253),
    ip_address                  inet,
    region                      varchar(50),
    status                      varchar(30) NOT NULL DEFAULT 'provisioning'
        CHECK (status IN ('active', 'provisioning', 'scheduled_decommission', 'decommissioned')),
    monthly_cost                numeric(10, 2) CHECK (monthly_cost >= 0),
    approximate_cost            numeric(8, 2) CHECK (approximate_cost >= 0),
    hostwinds_billing_day       integer CHECK (hostwinds_billing_day BETWEEN 1 AND 31),
    current_billing_period_start date,
    current_billing_period_end  date,
    decommission_scheduled_for  timestamptz,
    created                     timestamptz NOT NULL DEFAULT now(),
    updated                     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_vps_instances_status ON platform.vps_instances (status);

CREATE TABLE platform.smtp_ip_addresses (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vps_instance_id           uuid NOT NULL REFERENCES platform.vps_instances (id) ON DELETE CASCADE,
    ip_address                inet NOT NULL UNIQUE,
    rdns_hostname             varchar(253),
    status                    varchar(20) NOT NULL DEFAULT 'available'
        CHECK (status IN ('available', 'assigned', 'warming', 'warmed', 'degraded', 'burned', 'quarantined')),
    reputation_state          varchar(10) NOT NULL DEFAULT 'good'
        CHECK (reputation_state IN ('good', 'fair', 'poor', 'critical')),
    approximate_cost          numeric(6, 2) CHECK (approximate_cost >= 0),
    last_reputation_check     timestamptz,
    assigned_count            integer NOT NULL DEFAULT 0 CHECK (assigned_count >= 0),
    provider_blacklist_status jsonb NOT NULL DEFAULT '{}',
    created                   timestamptz NOT NULL DEFAULT now(),
    updated                   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_smtp_ip_addresses_status ON platform.smtp_ip_addresses (status);
CREATE INDEX idx_smtp_ip_addresses_vps ON platform.smtp_ip_addresses (vps_instance_id);

CREATE TABLE platform.feature_flags (
    key                 varchar(100) PRIMARY KEY,
    enabled             boolean NOT NULL DEFAULT false,
    rollout_percentage  integer NOT NULL DEFAULT 0 CHECK (rollout_percentage BETWEEN 0 AND 100),
    description         text,
    created             timestamptz NOT NULL DEFAULT now(),
    updated             timestamptz NOT NULL DEFAULT now()
);

-- Staff and system settings: read and written by platform operators only (no application grants).
CREATE TABLE internal.system_config (
    key           varchar(100) PRIMARY KEY,
    value         jsonb NOT NULL,
    is_sensitive  boolean NOT NULL DEFAULT false,
    created       timestamptz NOT NULL DEFAULT now(),
    updated       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE internal.permissions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         varchar(100) NOT NULL UNIQUE,
    description  text
);

CREATE TABLE internal.staff_roles (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         varchar(100) NOT NULL UNIQUE,
    description  text
);

CREATE TABLE internal.staff_role_permissions (
    role_id        bigint NOT NULL REFERENCES internal.staff_roles (id) ON DELETE CASCADE,
    permission_id  bigint NOT NULL REFERENCES internal.permissions (id) ON DELETE CASCADE,
    PRIMARY KEY (role_id, permission_id)
);

CREATE TABLE internal.staff_members (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email      citext NOT NULL UNIQUE,
    name       varchar(255),
    role_id    bigint REFERENCES internal.staff_roles (id),
    is_active  boolean NOT NULL DEFAULT true,
    created    timestamptz NOT NULL DEFAULT now(),
    updated    timestamptz NOT NULL DEFAULT now()
);
