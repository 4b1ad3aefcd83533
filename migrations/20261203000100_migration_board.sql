-- The migration board: every account Microsoft saw sending with SMTP AUTH at a
-- customer, where its move to the relay stands, and the files it was read from.

-- One row per file imported (or sign-in log read) for a customer.
CREATE TABLE smtp_auth_imports (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('summary', 'details', 'exposure', 'signins')),
    file_name    text,
    rows         integer NOT NULL,
    accounts     integer NOT NULL,
    imported_by  text NOT NULL,
    imported_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX smtp_auth_imports_tenant ON smtp_auth_imports (tenant_id, imported_at DESC);

-- One row per account of a customer.
CREATE TABLE smtp_auth_accounts (
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    account          text NOT NULL CHECK (account = lower(account) AND position('@' IN account) > 1),
    -- What the latest report (or sign-in read) showed.
    basic_messages   bigint NOT NULL DEFAULT 0,
    oauth_messages   bigint NOT NULL DEFAULT 0,
    first_seen_at    timestamptz,
    last_seen_at     timestamptz,
    last_basic_at    timestamptz,
    sources          text[] NOT NULL DEFAULT '{}',
    -- Microsoft saw it sending with SMTP AUTH at all (else only in the exposure list).
    seen_sending     boolean NOT NULL DEFAULT false,
    -- The exposure list says SMTP AUTH is in effect for its mailbox (NULL: not listed).
    smtp_auth_enabled boolean,
    state            text NOT NULL DEFAULT 'to_migrate'
                     CHECK (state IN ('to_migrate', 'device_created', 'done', 'ignored')),
    device_id        uuid REFERENCES devices (id) ON DELETE SET NULL,
    linked_at        timestamptz,
    -- The first message mailbridge accepted from the linked device (kept after the
    -- message itself is purged).
    relay_seen_at    timestamptz,
    done_at          timestamptz,
    ignore_reason    text CHECK (ignore_reason IS NULL OR length(ignore_reason) BETWEEN 1 AND 500),
    last_import_id   bigint REFERENCES smtp_auth_imports (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, account),
    CHECK ((state = 'ignored') = (ignore_reason IS NOT NULL))
);
CREATE INDEX smtp_auth_accounts_device ON smtp_auth_accounts (device_id) WHERE device_id IS NOT NULL;
