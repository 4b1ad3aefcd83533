-- Consent links made to be sent to a customer's admin: when each was made, until
-- when it works, and whether and when it was used. The link itself is never kept
-- (only the hash of its state, the key of its flow in oauth_flows).
CREATE TABLE consent_links (
    state_hash  bytea PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    entra_tenant_id uuid NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    -- Set when the consent answered by this link was granted (not cancelled or refused).
    granted     boolean NOT NULL DEFAULT false
);
CREATE INDEX consent_links_tenant ON consent_links (tenant_id, created_at DESC);

-- Credentials issued in bulk (an import, a bulk rotation), sealed with the master key
-- until their one download; the row is deleted by that download, or when it expires.
CREATE TABLE credential_downloads (
    id          uuid PRIMARY KEY,
    staff_id    uuid REFERENCES staff (id) ON DELETE CASCADE,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    sealed_csv  bytea NOT NULL,
    devices     integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX credential_downloads_expires ON credential_downloads (expires_at);

-- Per-device health in the device list: a customer's queued and recent messages by
-- device without touching its older ones.
CREATE INDEX messages_tenant_device_received ON messages (tenant_id, device_id, received_at DESC);
