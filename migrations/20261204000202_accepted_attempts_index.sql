-- no-transaction
-- The index of recent refusals (the customer overview), for the new outcome name
-- (see 0200); built without blocking writes.
CREATE INDEX CONCURRENTLY IF NOT EXISTS delivery_attempts_refused ON delivery_attempts (started_at)
    WHERE outcome <> 'accepted';
