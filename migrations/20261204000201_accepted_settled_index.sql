-- no-transaction
-- The purge's index of finished messages, for the new state names (see 0200); built
-- without blocking writes. CREATE INDEX CONCURRENTLY cannot run in a transaction, so
-- this migration is one statement on its own.
CREATE INDEX CONCURRENTLY IF NOT EXISTS messages_settled ON messages (finished_at)
    WHERE state IN ('accepted', 'bounced', 'failed');
