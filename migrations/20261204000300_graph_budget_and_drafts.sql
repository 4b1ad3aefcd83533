-- Graph's Outlook limits per app and mailbox (10 000 requests per 10 minutes, 150 MB
-- uploaded per 5 minutes), kept by every worker together: one row per app, mailbox
-- and minute, so that a check sums at most eleven rows and the hot path adds to one.
CREATE TABLE graph_usage (
    client_id text NOT NULL,
    mailbox text NOT NULL,
    minute timestamptz NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    upload_bytes bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, mailbox, minute)
);

-- The draft a large-message attempt created in the sender mailbox and has not yet
-- sent or deleted: the next attempt (another worker's, after a crash) deletes it
-- before it makes a new one, so failed sends never leave drafts behind.
ALTER TABLE messages ADD COLUMN graph_draft_id text;
