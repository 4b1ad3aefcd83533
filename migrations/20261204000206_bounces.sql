-- Bounces: Microsoft's non-delivery reports (NDRs) in the sender mailbox, matched to
-- the messages they are about by the original Message-ID.

-- The Message-ID header the message was submitted with (without angle brackets);
-- the edge adds one when the device sent none. Adding a nullable column without a
-- default changes the catalogue only.
ALTER TABLE messages ADD COLUMN message_id_header text;

-- Per failed recipient: Microsoft's enhanced status code, its diagnostic text and
-- what it means (a diagnosis key, services/core/src/diagnosis.rs).
CREATE TABLE message_bounces (
    message_id      uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    recipient       text NOT NULL,
    status          text NOT NULL,
    diagnostic_code text,
    diagnosis       text NOT NULL,
    reported_at     timestamptz NOT NULL,
    -- The NDR's Graph message id: processing one NDR twice changes nothing.
    report_id       text NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, recipient)
);

-- One row per customer whose sender mailbox is watched for NDRs. A worker claims a
-- row with a lease (FOR UPDATE SKIP LOCKED), so several workers never read one
-- mailbox at once; the watermark is the receivedDateTime of the newest report
-- handled, so each poll asks Microsoft only for what is new.
CREATE TABLE bounce_watch (
    tenant_id        uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    mailbox          text NOT NULL,
    watermark        timestamptz,
    -- The Graph id of the folder processed reports are moved to.
    folder_id        text,
    next_poll_at     timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_expires_at timestamptz,
    last_polled_at   timestamptz,
    -- NULL: not tried yet; false: Microsoft refused to show the mailbox.
    visible          boolean,
    not_visible_reason text,
    bounces_found    bigint NOT NULL DEFAULT 0
);
CREATE INDEX bounce_watch_due ON bounce_watch (next_poll_at);
