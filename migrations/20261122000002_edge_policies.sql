-- Per-device policies enforced by the edge.
ALTER TABLE devices
    -- Source networks the device may connect from. A device without credentials in
    -- use (port 25) is identified by these; with credentials, logins from elsewhere fail.
    ADD COLUMN allowed_networks cidr[] NOT NULL DEFAULT '{}',
    -- Addresses (`scan@praxis.example`) or domains (`@praxis.example`) the device may
    -- use as envelope sender and header From.
    ADD COLUMN allowed_senders text[] NOT NULL DEFAULT '{}',
    -- 'rewrite': a From outside allowed_senders is rewritten to the tenant's sender
    -- mailbox (the original goes to Reply-To); 'enforce': such a message is refused.
    ADD COLUMN sender_policy text NOT NULL DEFAULT 'rewrite'
        CHECK (sender_policy IN ('rewrite', 'enforce')),
    ADD COLUMN rate_limit_per_minute integer CHECK (rate_limit_per_minute > 0),
    ADD COLUMN max_message_bytes bigint CHECK (max_message_bytes > 0);

ALTER TABLE tenants
    ADD COLUMN rate_limit_per_minute integer CHECK (rate_limit_per_minute > 0);

-- Rate limits count a device's and a tenant's recent messages.
CREATE INDEX messages_device_received ON messages (device_id, received_at DESC);
