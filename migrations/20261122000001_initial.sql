-- Tenants are the MSP's customers: one Microsoft 365 (Entra) tenant each.
CREATE TABLE tenants (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                  text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    entra_tenant_id       uuid NOT NULL,
    sender_mailbox        text NOT NULL CHECK (position('@' IN sender_mailbox) > 1),
    delivery_method       text NOT NULL DEFAULT 'graph' CHECK (delivery_method IN ('graph', 'smtp')),
    save_to_sent_items    boolean NOT NULL DEFAULT true,
    -- A customer's own app registration; when absent the MSP's multi-tenant app is used.
    client_id             text,
    client_secret_sealed  bytea,
    created_at            timestamptz NOT NULL DEFAULT now(),
    CHECK ((client_id IS NULL) = (client_secret_sealed IS NULL))
);

-- Devices are what submits mail: printers, scanners, lab analysers, scripts.
CREATE TABLE devices (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    username        text NOT NULL UNIQUE,
    password_hash   text NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz,
    last_seen_addr  inet,
    UNIQUE (tenant_id, name)
);

-- The queue. A row exists before the edge answers 250; its body lives apart so that
-- queue scans never read bodies and a delivered body can be deleted on its own.
CREATE TABLE messages (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    device_id        uuid REFERENCES devices (id) ON DELETE SET NULL,
    mail_from        text NOT NULL,
    rcpt_to          text[] NOT NULL CHECK (cardinality(rcpt_to) > 0),
    size_bytes       bigint NOT NULL,
    client_addr      inet NOT NULL,
    tls_protocol     text,
    tls_cipher       text,
    state            text NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'delivering', 'delivered', 'failed')),
    attempt_count    integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_expires_at timestamptz,
    received_at      timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    last_error       text
);

CREATE INDEX messages_due ON messages (next_attempt_at) WHERE state = 'queued';
CREATE INDEX messages_leased ON messages (lease_expires_at) WHERE state = 'delivering';
CREATE INDEX messages_tenant_received ON messages (tenant_id, received_at DESC);

CREATE TABLE message_bodies (
    message_id  uuid PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    body        bytea NOT NULL
);

-- One row per try to hand a message to Microsoft 365, with its answer.
CREATE TABLE delivery_attempts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id       uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    started_at       timestamptz NOT NULL,
    duration_ms      integer NOT NULL,
    method           text NOT NULL,
    outcome          text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'permanent')),
    upstream_status  integer,
    upstream_code    text,
    upstream_message text,
    worker           text NOT NULL
);

CREATE INDEX delivery_attempts_message ON delivery_attempts (message_id, started_at);
