-- Alerts, webhooks and usage reports.

-- The MSP's alert rules: one row per kind, with defaults. `threshold` and
-- `window_minutes` mean what each kind says (see mailbridge_core::alerts).
CREATE TABLE alert_rules (
    kind           text PRIMARY KEY CHECK (kind IN ('device_silent', 'device_lockout',
                       'customer_token', 'refusals', 'queue_age', 'bounce_rate',
                       'app_credential', 'edge_certificate')),
    enabled        boolean NOT NULL DEFAULT true,
    threshold      integer NOT NULL CHECK (threshold >= 1),
    window_minutes integer NOT NULL DEFAULT 60 CHECK (window_minutes BETWEEN 1 AND 43200),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO alert_rules (kind, threshold, window_minutes) VALUES
    ('device_silent', 1, 60),      -- hours per device (devices.silent_alert_hours)
    ('device_lockout', 1, 60),     -- any locked pair or username of the device
    ('customer_token', 1, 60),     -- consent lost or token refused
    ('refusals', 5, 60),           -- permanent refusals within the window
    ('queue_age', 30, 60),         -- minutes the oldest queued message waits
    ('bounce_rate', 20, 1440),     -- per cent bounced or failed within the window
    ('app_credential', 14, 60),    -- days before the MSP app's secret or certificate expires
    ('edge_certificate', 14, 60);  -- days before the edge's TLS certificate expires

-- The MSP's alert settings (one row): where alert e-mails go and as which
-- customer's mailbox they are sent, and the MSP app's secret expiry as entered.
CREATE TABLE alert_settings (
    id                    boolean PRIMARY KEY DEFAULT true CHECK (id),
    email_to              text CHECK (position('@' IN email_to) > 1),
    email_tenant_id       uuid REFERENCES tenants (id) ON DELETE SET NULL,
    app_secret_expires_on date,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
INSERT INTO alert_settings DEFAULT VALUES;

-- Per device: alert when it has sent nothing for this many hours (NULL: off).
ALTER TABLE devices ADD COLUMN silent_alert_hours integer
    CHECK (silent_alert_hours BETWEEN 1 AND 8760);

-- An alert: opened once per (kind, subject) while its condition lasts, updated
-- while it lasts, resolved when it ends. A new occurrence is a new row.
CREATE TABLE alerts (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind            text NOT NULL,
    subject         text NOT NULL,
    tenant_id       uuid REFERENCES tenants (id) ON DELETE CASCADE,
    device_id       uuid REFERENCES devices (id) ON DELETE CASCADE,
    severity        text NOT NULL CHECK (severity IN ('warning', 'critical')),
    -- What the condition is now, e.g. {"count": 7}: the texts are built from it.
    facts           jsonb NOT NULL DEFAULT '{}',
    opened_at       timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    acknowledged_at timestamptz,
    acknowledged_by text
);
CREATE UNIQUE INDEX alerts_open ON alerts (kind, subject) WHERE resolved_at IS NULL;
CREATE INDEX alerts_tenant ON alerts (tenant_id, opened_at DESC);
CREATE INDEX alerts_device ON alerts (device_id) WHERE device_id IS NOT NULL;
CREATE INDEX alerts_resolved ON alerts (resolved_at) WHERE resolved_at IS NOT NULL;

-- Certificate expiries as the processes that serve or present them report them
-- (the edge's TLS certificate, the MSP app's certificate credential).
CREATE TABLE certificate_expiries (
    name        text NOT NULL CHECK (name IN ('edge', 'entra_app')),
    host        text NOT NULL,
    not_after   timestamptz NOT NULL,
    reported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, host)
);

-- Permanent refusals by time, for the refusals alert.
CREATE INDEX delivery_attempts_permanent ON delivery_attempts (started_at) WHERE outcome = 'permanent';

-- Webhooks: where alert events are posted, signed with the webhook's secret.
CREATE TABLE webhooks (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name          text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    url           text NOT NULL CHECK (length(url) BETWEEN 8 AND 2000),
    secret_sealed bytea NOT NULL,
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- The outbox: one row per event and webhook, until delivered or given up.
CREATE TABLE webhook_outbox (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    webhook_id       uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         uuid NOT NULL,
    event_type       text NOT NULL,
    payload          text NOT NULL,
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_outbox_finished ON webhook_outbox (finished_at) WHERE state <> 'pending';

-- Each try to post an event, with the receiver's answer (the delivery log).
CREATE TABLE webhook_deliveries (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id  uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id    uuid NOT NULL,
    event_type  text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL,
    status      integer,
    response    text NOT NULL DEFAULT '',
    error       text
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id DESC);

-- Usage: what each customer's devices sent, per hour, counted when a message is
-- settled (in the settlement's own transaction: see usage_count), kept after the
-- messages are purged. Hourly rows older than two days are rolled up into days.
CREATE TABLE usage_hours (
    tenant_id             uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    hour                  timestamptz NOT NULL,
    accepted              bigint NOT NULL DEFAULT 0,
    accepted_by_microsoft bigint NOT NULL DEFAULT 0,
    bounced               bigint NOT NULL DEFAULT 0,
    failed                bigint NOT NULL DEFAULT 0,
    recipients            bigint NOT NULL DEFAULT 0,
    bytes                 bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, hour)
);
CREATE INDEX usage_hours_hour ON usage_hours (hour);

CREATE TABLE usage_days (
    tenant_id             uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day                   date NOT NULL,
    accepted              bigint NOT NULL DEFAULT 0,
    accepted_by_microsoft bigint NOT NULL DEFAULT 0,
    bounced               bigint NOT NULL DEFAULT 0,
    failed                bigint NOT NULL DEFAULT 0,
    recipients            bigint NOT NULL DEFAULT 0,
    bytes                 bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);
CREATE INDEX usage_days_day ON usage_days (day);

-- The devices that sent anything in a month (active devices).
CREATE TABLE usage_devices (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    month     date NOT NULL,
    device_id uuid NOT NULL,
    PRIMARY KEY (tenant_id, month, device_id)
);

-- Counts one device message's fate into its customer's usage (UTC hour and month of
-- the settlement): `outcome` is the message's new state. Anything but a device
-- message's final state counts nothing. Every settlement goes through here, so a
-- new final state is one more branch. Returns 1 (callers sum it).
CREATE FUNCTION usage_count(message uuid, outcome text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    m record;
    h timestamptz := date_trunc('hour', now(), 'UTC');
BEGIN
    IF outcome NOT IN ('delivered', 'accepted', 'failed', 'bounced') THEN
        RETURN 1;
    END IF;
    SELECT tenant_id, device_id, kind, cardinality(rcpt_to) AS recipients, size_bytes
      INTO m FROM messages WHERE id = message;
    IF NOT FOUND OR m.kind <> 'device' THEN
        RETURN 1;
    END IF;
    IF outcome = 'bounced' THEN
        -- Microsoft accepted it earlier (counted then); only the bounce is new.
        INSERT INTO usage_hours AS u (tenant_id, hour, bounced) VALUES (m.tenant_id, h, 1)
        ON CONFLICT (tenant_id, hour) DO UPDATE SET bounced = u.bounced + 1;
        RETURN 1;
    END IF;
    INSERT INTO usage_hours AS u (tenant_id, hour, accepted, accepted_by_microsoft, failed, recipients, bytes)
    VALUES (m.tenant_id, h, 1,
            CASE WHEN outcome IN ('delivered', 'accepted') THEN 1 ELSE 0 END,
            CASE WHEN outcome = 'failed' THEN 1 ELSE 0 END,
            m.recipients, m.size_bytes)
    ON CONFLICT (tenant_id, hour) DO UPDATE
       SET accepted = u.accepted + 1,
           accepted_by_microsoft = u.accepted_by_microsoft + EXCLUDED.accepted_by_microsoft,
           failed = u.failed + EXCLUDED.failed,
           recipients = u.recipients + EXCLUDED.recipients,
           bytes = u.bytes + EXCLUDED.bytes;
    IF m.device_id IS NOT NULL THEN
        INSERT INTO usage_devices (tenant_id, month, device_id)
        VALUES (m.tenant_id, date_trunc('month', h AT TIME ZONE 'UTC')::date, m.device_id)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN 1;
END $$;
