-- Delivery: diagnoses, tenant pauses, notifications, fair leasing.
ALTER TABLE delivery_attempts
    -- The diagnosis key (services/core/src/diagnosis.rs): what the answer meant.
    ADD COLUMN diagnosis text;

ALTER TABLE tenants
    -- Where reports of messages that could not be delivered go (through this tenant's path).
    ADD COLUMN notification_address text CHECK (position('@' IN notification_address) > 1),
    -- While the token endpoint refuses this tenant, its messages wait instead of hammering it.
    ADD COLUMN paused_until timestamptz,
    ADD COLUMN token_failures integer NOT NULL DEFAULT 0,
    ADD COLUMN last_token_error text,
    ADD COLUMN last_token_error_at timestamptz,
    ADD COLUMN last_token_ok_at timestamptz;

ALTER TABLE messages
    -- 'device': sent by a device; 'notification': a report mailbridge wrote (never reported on).
    ADD COLUMN kind text NOT NULL DEFAULT 'device' CHECK (kind IN ('device', 'notification')),
    ADD COLUMN subject text;

-- Leasing takes the oldest due messages of every tenant in turn.
DROP INDEX messages_due;
DROP INDEX messages_leased;
CREATE INDEX messages_due ON messages (tenant_id, next_attempt_at) WHERE state = 'queued';
CREATE INDEX messages_leased ON messages (tenant_id, lease_expires_at) WHERE state = 'delivering';
CREATE INDEX messages_finished ON messages (finished_at) WHERE state IN ('delivered', 'failed');
