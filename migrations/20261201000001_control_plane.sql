-- The control plane: MSP staff and their sessions, API tokens, the audit log, and
-- customers that exist before their Microsoft 365 tenant is connected.

-- A customer is created first and connected to its Entra tenant by admin consent;
-- until then it has no tenant id and its messages wait.
ALTER TABLE tenants
    ALTER COLUMN entra_tenant_id DROP NOT NULL,
    -- When an admin consent was last verified by a real token request.
    ADD COLUMN consented_at timestamptz;

ALTER TABLE devices
    ADD COLUMN kind text NOT NULL DEFAULT 'printer'
        CHECK (kind IN ('printer', 'scanner', 'medical', 'software', 'other')),
    ADD COLUMN site text CHECK (length(site) <= 200),
    -- The listener the device is set up for (shown on its setup card).
    ADD COLUMN listener text NOT NULL DEFAULT 'submission'
        CHECK (listener IN ('submission', 'submissions', 'relay'));

-- MSP staff, known by their OpenID Connect issuer and subject. No passwords.
CREATE TABLE staff (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    issuer          text NOT NULL,
    subject         text NOT NULL,
    email           text NOT NULL,
    display_name    text NOT NULL,
    role            text NOT NULL CHECK (role IN ('owner', 'admin', 'technician', 'readonly')),
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_sign_in_at timestamptz,
    UNIQUE (issuer, subject)
);

-- Browser sessions. The cookie holds a random id; only its SHA-256 is stored.
CREATE TABLE web_sessions (
    id_hash      bytea PRIMARY KEY,
    staff_id     uuid NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    client_addr  inet
);
CREATE INDEX web_sessions_staff ON web_sessions (staff_id);

-- Sign-ins and admin consents in flight: what the browser must bring back.
CREATE TABLE oauth_flows (
    state_hash    bytea PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('sign_in', 'consent')),
    nonce         text,
    pkce_verifier text,
    tenant_id     uuid REFERENCES tenants (id) ON DELETE CASCADE,
    staff_id      uuid REFERENCES staff (id) ON DELETE CASCADE,
    -- Where the browser goes afterwards (a path of the control plane).
    return_to     text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- API tokens for automation: only a SHA-256 of the token is kept.
CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    token_hash   bytea NOT NULL UNIQUE,
    token_prefix text NOT NULL,
    role         text NOT NULL CHECK (role IN ('admin', 'technician', 'readonly')),
    created_by   uuid REFERENCES staff (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- Every change made through the control plane or its API: who, what, when, from where.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    staff_id    uuid REFERENCES staff (id) ON DELETE SET NULL,
    action      text NOT NULL,
    tenant_id   uuid REFERENCES tenants (id) ON DELETE SET NULL,
    target      text,
    details     jsonb NOT NULL DEFAULT '{}',
    client_addr inet
);
CREATE INDEX audit_log_at ON audit_log (at DESC);
CREATE INDEX audit_log_tenant_at ON audit_log (tenant_id, at DESC);

-- Test messages staff send from the control plane.
ALTER TABLE messages DROP CONSTRAINT messages_kind_check,
    ADD CONSTRAINT messages_kind_check CHECK (kind IN ('device', 'notification', 'test'));

-- Recent refusals per customer on the overview.
CREATE INDEX delivery_attempts_started ON delivery_attempts (started_at) WHERE outcome <> 'delivered';

-- The message log's searches, fast with millions of rows.
CREATE INDEX messages_received ON messages (received_at DESC, id DESC);
CREATE INDEX messages_state_received ON messages (state, received_at DESC, id DESC);
CREATE INDEX messages_tenant_state_received ON messages (tenant_id, state, received_at DESC, id DESC);
CREATE INDEX messages_sender ON messages (lower(mail_from), received_at DESC);
CREATE INDEX messages_recipients ON messages USING gin (rcpt_to);
