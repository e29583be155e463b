-- Billing references. Stripe is the source of truth; these rows only point at Stripe objects.

CREATE TABLE app.subscriptions (
    tenant_id               uuid NOT NULL REFERENCES app.tenants (tenant_id) ON DELETE CASCADE,
    id                      uuid NOT NULL DEFAULT gen_random_uuid(),
    plan_id                 uuid NOT NULL REFERENCES platform.plans (id),
    status                  varchar(20) NOT NULL DEFAULT 'active'
        CHECK (status IN ('trialing', 'active', 'past_due', 'canceled', 'unpaid')),
    stripe_subscription_id  varchar(255),
    current_period_start    timestamptz,
    current_period_end      timestamptz,
    cancel_at               timestamptz,
    created                 timestamptz NOT NULL DEFAULT now(),
    updated                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, stripe_subscription_id)
);
CREATE INDEX idx_subscriptions_tenant_status ON app.subscriptions (tenant_id, status);
SELECT internal.enable_tenant_rls('app.subscriptions');

CREATE TABLE app.subscription_addons (
    tenant_id        uuid NOT NULL,
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    subscription_id  uuid NOT NULL,
    addon_type       varchar(50) NOT NULL CHECK (addon_type IN ('dedicated_ip', 'extra_mailbox', 'extra_domain', 'other')),
    quantity         integer NOT NULL DEFAULT 1 CHECK (quantity >= 1),
    stripe_item_id   varchar(255),
    created          timestamptz NOT NULL DEFAULT now(),
    updated          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, subscription_id) REFERENCES app.subscriptions (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX idx_subscription_addons_subscription ON app.subscription_addons (tenant_id, subscription_id);
SELECT internal.enable_tenant_rls('app.subscription_addons');

CREATE TABLE app.payments (
    tenant_id                 uuid NOT NULL REFERENCES app.tenants (tenant_id) ON DELETE CASCADE,
    id                        uuid NOT NULL DEFAULT gen_random_uuid(),
    subscription_id           uuid,
    amount                    numeric(12, 2) NOT NULL CHECK (amount >= 0),
    currency                  char(3) NOT NULL DEFAULT 'USD',
    status                    varchar(20) NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'refunded')),
    stripe_payment_intent_id  varchar(255),
    paid_at                   timestamptz,
    created                   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, stripe_payment_intent_id),
    FOREIGN KEY (tenant_id, subscription_id)
        REFERENCES app.subscriptions (tenant_id, id) ON DELETE SET NULL (subscription_id)
);
CREATE INDEX idx_payments_tenant_created ON app.payments (tenant_id, created DESC);
SELECT internal.enable_tenant_rls('app.payments');
