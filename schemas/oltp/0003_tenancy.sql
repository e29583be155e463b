-- Tenants, users and membership, workspaces (companies), per-tenant settings.
--
-- Gaps of the docs fixed here: tenants are keyed by tenant_id (the docs' tenants.id) so every tenant table
-- is fenced the same way; workspace names are unique per tenant (a global UNIQUE would reveal other tenants'
-- names through the error); tenant_config, tenant_policies and user_preferences carry tenant_id.

-- Users are platform identities (a user can belong to several tenants). Who is the current user:
CREATE FUNCTION app_private.current_user_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.user_id', true), '')::uuid $$;

CREATE TABLE app.tenants (
    tenant_id   uuid PRIMARY KEY,
    name        varchar(255) NOT NULL,
    compute_id  uuid,
    created     timestamptz NOT NULL DEFAULT now(),
    updated     timestamptz NOT NULL DEFAULT now(),
    deleted     timestamptz
);
SELECT internal.enable_tenant_rls('app.tenants');

CREATE TABLE app.users (
    id              uuid PRIMARY KEY,
    email           citext NOT NULL UNIQUE,
    name            text,
    family_name     text,
    given_name      text,
    picture         text,
    email_verified  timestamptz,
    created         timestamptz NOT NULL DEFAULT now(),
    updated         timestamptz NOT NULL DEFAULT now(),
    deleted         timestamptz
);

CREATE TABLE app.tenant_users (
    tenant_id  uuid NOT NULL REFERENCES app.tenants (tenant_id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES app.users (id) ON DELETE CASCADE,
    roles      text[] NOT NULL DEFAULT '{}',
    email      citext,
    created    timestamptz NOT NULL DEFAULT now(),
    updated    timestamptz NOT NULL DEFAULT now(),
    deleted    timestamptz,
    PRIMARY KEY (tenant_id, user_id)
);
SELECT internal.enable_tenant_rls('app.tenant_users');

-- A user row is visible to the user itself and to the tenants it belongs to (tenant_users is itself fenced,
-- so the subquery only sees the current tenant's members); only the user may create or change its row.
ALTER TABLE app.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.users FORCE ROW LEVEL SECURITY;
CREATE POLICY users_visible ON app.users FOR SELECT
    USING (id = (SELECT app_private.current_user_id()) OR id IN (SELECT tu.user_id FROM app.tenant_users tu));
CREATE POLICY users_insert_self ON app.users FOR INSERT
    WITH CHECK (id = (SELECT app_private.current_user_id()));
CREATE POLICY users_update_self ON app.users FOR UPDATE
    USING (id = (SELECT app_private.current_user_id()))
    WITH CHECK (id = (SELECT app_private.current_user_id()));

CREATE TABLE app.companies (
    tenant_id       uuid NOT NULL REFERENCES app.tenants (tenant_id) ON DELETE CASCADE,
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    name            varchar(100) NOT NULL,
    workspace_name  varchar(255),
    logo_url        text,
    status          varchar(20) NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'archived')),
    industry        varchar(100),
    company_size    varchar(50),
    created         timestamptz NOT NULL DEFAULT now(),
    updated         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, workspace_name)
);
SELECT internal.enable_tenant_rls('app.companies');

CREATE TABLE app.tenant_config (
    tenant_id  uuid PRIMARY KEY REFERENCES app.tenants (tenant_id) ON DELETE CASCADE,
    settings   jsonb NOT NULL DEFAULT '{}',
    created    timestamptz NOT NULL DEFAULT now(),
    updated    timestamptz NOT NULL DEFAULT now()
);
SELECT internal.enable_tenant_rls('app.tenant_config');

CREATE TABLE app.tenant_policies (
    tenant_id              uuid PRIMARY KEY REFERENCES app.tenants (tenant_id) ON DELETE CASCADE,
    password_min_length    integer NOT NULL DEFAULT 8 CHECK (password_min_length BETWEEN 8 AND 128),
    session_timeout_hours  integer NOT NULL DEFAULT 8 CHECK (session_timeout_hours BETWEEN 1 AND 720),
    max_login_attempts     integer NOT NULL DEFAULT 5 CHECK (max_login_attempts BETWEEN 1 AND 100),
    require_mfa            boolean NOT NULL DEFAULT false,
    created                timestamptz NOT NULL DEFAULT now(),
    updated                timestamptz NOT NULL DEFAULT now()
);
SELECT internal.enable_tenant_rls('app.tenant_policies');

CREATE TABLE app.user_preferences (
    tenant_id    uuid NOT NULL,
    user_id      uuid NOT NULL,
    preferences  jsonb NOT NULL DEFAULT '{}',
    created      timestamptz NOT NULL DEFAULT now(),
    updated      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES app.tenant_users (tenant_id, user_id) ON DELETE CASCADE
);
SELECT internal.enable_tenant_rls('app.user_preferences');
