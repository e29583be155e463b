-- Sending domains, mailboxes and the domain ↔ sending-IP assignments.
--
-- Gaps fixed: domain_ip_assignments carries tenant_id (the docs reach the tenant only through domains);
-- every reference to a tenant row is a composite (tenant_id, id) key, so a row can never point at another
-- tenant's row even though foreign-key checks bypass RLS.

CREATE TABLE app.domains (
    tenant_id                  uuid NOT NULL REFERENCES app.tenants (tenant_id) ON DELETE CASCADE,
    id                         uuid NOT NULL DEFAULT gen_random_uuid(),
    company_id                 uuid,
    domain                     varchar(253) NOT NULL,
    verification_status        varchar(20) NOT NULL DEFAULT 'pending'
        CHECK (verification_status IN ('pending', 'verified', 'failed', 'error')),
    dns_records                jsonb NOT NULL DEFAULT '{"records": []}',
    is_primary                 boolean NOT NULL DEFAULT false,
    verified                   timestamptz,
    mailu_domain               text,
    dns_ttl_observed           integer,
    dns_last_verified_at       timestamptz,
    dns_verification_error     text,
    dns_verification_attempts  integer NOT NULL DEFAULT 0 CHECK (dns_verification_attempts >= 0),
    created                    timestamptz NOT NULL DEFAULT now(),
    updated                    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, domain),
    FOREIGN KEY (tenant_id, company_id) REFERENCES app.companies (tenant_id, id) ON DELETE SET NULL (company_id)
);
CREATE INDEX idx_domains_tenant_status ON app.domains (tenant_id, verification_status);
CREATE INDEX idx_domains_tenant_company ON app.domains (tenant_id, company_id);
SELECT internal.enable_tenant_rls('app.domains');

CREATE TABLE app.email_accounts (
    tenant_id       uuid NOT NULL,
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    domain_id       uuid NOT NULL,
    email           citext NOT NULL,
    provider        varchar(20) NOT NULL DEFAULT 'mailu',
    vault_key_path  varchar(500),
    imap_settings   jsonb NOT NULL DEFAULT '{}',
    smtp_settings   jsonb NOT NULL DEFAULT '{}',
    status          varchar(20) NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'warming', 'paused', 'disabled')),
    last_warmed     timestamptz,
    daily_count     integer NOT NULL DEFAULT 0 CHECK (daily_count >= 0),
    created         timestamptz NOT NULL DEFAULT now(),
    updated         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, email),
    FOREIGN KEY (tenant_id, domain_id) REFERENCES app.domains (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX idx_email_accounts_tenant_domain ON app.email_accounts (tenant_id, domain_id);
SELECT internal.enable_tenant_rls('app.email_accounts');

CREATE TABLE app.domain_ip_assignments (
    tenant_id           uuid NOT NULL,
    id                  uuid NOT NULL DEFAULT gen_random_uuid(),
    domain_id           uuid NOT NULL,
    smtp_ip_address_id  uuid NOT NULL REFERENCES platform.smtp_ip_addresses (id) ON DELETE CASCADE,
    status              varchar(20) NOT NULL DEFAULT 'scheduled'
        CHECK (status IN ('active', 'warming', 'scheduled', 'expired')),
    warmup_state        varchar(20) NOT NULL DEFAULT 'unwarmed'
        CHECK (warmup_state IN ('unwarmed', 'warming', 'warmed')),
    assigned            timestamptz NOT NULL DEFAULT now(),
    expires             timestamptz,
    last_sent           timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, domain_id, smtp_ip_address_id),
    FOREIGN KEY (tenant_id, domain_id) REFERENCES app.domains (tenant_id, id) ON DELETE CASCADE
);
SELECT internal.enable_tenant_rls('app.domain_ip_assignments');
