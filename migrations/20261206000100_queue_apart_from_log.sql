-- The queue apart from the message log.
--
-- `messages` carried both the queue (state, due time, lease) and the message log the
-- control plane searches (nine indexes). Every lease, retry and settlement changed an
-- indexed column, so each step of a message's life wrote a new row version into
-- every one of the log's indexes. Now:
--   `queue`     holds only what leasing needs, one row per message waiting or being
--               delivered, with only the queue's two partial indexes. Written at
--               commit, updated by each lease and retry, deleted at settlement.
--   `messages`  is the log: written at commit (state 'queued') and once at the end
--               (accepted or failed, with the attempt count and the last error; a
--               bounce may follow). It never holds 'delivering' any more: that
--               state is read from the queue (a lease).
-- A queue row's `due_at` is its next attempt while it waits (`lease_owner` NULL)
-- and its lease's expiry while it is leased, so a lease that expires (its worker
-- died) is simply due again.
--
-- Rollout from the previous version: the lease columns of `messages` are dropped
-- here, so a worker of the previous version still running cannot lease or settle
-- any more (its statements fail) instead of delivering a message a second time; its
-- leases are carried over and recovered by the new workers when they expire. An
-- edge of the previous version writes a log row without a queue row; the workers
-- adopt such rows (`queue::adopt_orphans`). A web pod of the previous version
-- shows errors on the message pages until it is replaced.
SET LOCAL lock_timeout = '5s';

-- No lease or settlement of the previous version between the copy below and the
-- change of the log's states (the new table's foreign key would also take this
-- lock; taken here so that the copy does not depend on it).
LOCK TABLE messages IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE queue (
    message_id    uuid PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    tenant_id     uuid NOT NULL,
    due_at        timestamptz NOT NULL DEFAULT now(),
    lease_owner   text,
    -- Including the attempt a lease is for.
    attempt_count integer NOT NULL DEFAULT 0,
    last_error    text,
    -- The Graph draft an attempt left (the large-message path), deleted by the next.
    graph_draft_id text
);
CREATE INDEX queue_waiting ON queue (tenant_id, due_at) WHERE lease_owner IS NULL;
CREATE INDEX queue_leased ON queue (tenant_id, due_at) WHERE lease_owner IS NOT NULL;

INSERT INTO queue (message_id, tenant_id, due_at, lease_owner, attempt_count, last_error, graph_draft_id)
SELECT id, tenant_id,
       CASE WHEN state = 'delivering' THEN coalesce(lease_expires_at, now()) ELSE next_attempt_at END,
       CASE WHEN state = 'delivering' THEN coalesce(lease_owner, 'previous-version') END,
       attempt_count, last_error, graph_draft_id
  FROM messages WHERE state IN ('queued', 'delivering');
UPDATE messages SET state = 'queued' WHERE state = 'delivering';

DROP INDEX messages_due;
DROP INDEX messages_leased;
ALTER TABLE messages
    DROP COLUMN next_attempt_at,
    DROP COLUMN lease_owner,
    DROP COLUMN lease_expires_at,
    DROP COLUMN graph_draft_id;

-- A sealed body under about 8 KB stays in its row instead of being cut into TOAST
-- chunks (written at commit, deleted at settlement: twice the work for nothing).
-- Larger bodies still go to TOAST, uncompressed (STORAGE EXTERNAL: sealed bytes do
-- not compress).
ALTER TABLE message_bodies SET (toast_tuple_target = 8160);
