-- Old devices as they are: a device may be allowed on the legacy-TLS listener
-- (TLS 1.0/1.1, CBC suites), may name its model family (notes for technicians),
-- and the edge keeps its last SMTP sessions as transcripts for diagnosis.

ALTER TABLE devices
    ADD COLUMN legacy_tls   boolean NOT NULL DEFAULT false,
    ADD COLUMN model_family text CHECK (length(model_family) BETWEEN 1 AND 100);

-- The edge caches legacy_tls with the credential: a change must reach it.
DROP TRIGGER devices_changed ON devices;
CREATE TRIGGER devices_changed
    AFTER UPDATE OF tenant_id, username, password_hash, enabled, allowed_networks,
                    allowed_senders, sender_policy, rate_limit_per_minute, max_message_bytes,
                    legacy_tls
    ON devices FOR EACH STATEMENT EXECUTE FUNCTION notify_device_change();

-- One SMTP session as the edge saw it: commands and reply codes only (never
-- passwords, AUTH payloads or message data). Keyed by the device it was for (by
-- login name, even when the password was wrong), or else by its source address.
-- Trimmed to the last few per key by the edge and purged after a short retention:
-- it is personal data about a site's network.
CREATE TABLE session_transcripts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id    uuid REFERENCES devices (id) ON DELETE CASCADE,
    source_addr  inet NOT NULL,
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz NOT NULL,
    listener     text NOT NULL,
    tls_protocol text,
    tls_cipher   text,
    tls_failure  text,
    outcome      text NOT NULL,
    lines        jsonb NOT NULL
);
CREATE INDEX session_transcripts_by_device
    ON session_transcripts (device_id, started_at DESC) WHERE device_id IS NOT NULL;
CREATE INDEX session_transcripts_by_source
    ON session_transcripts (source_addr, started_at DESC) WHERE device_id IS NULL;
CREATE INDEX session_transcripts_by_age ON session_transcripts (ended_at);
