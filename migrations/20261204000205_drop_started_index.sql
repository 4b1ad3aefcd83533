-- no-transaction
-- Replaced by delivery_attempts_refused (0202); dropped without an exclusive lock.
DROP INDEX CONCURRENTLY IF EXISTS delivery_attempts_started;
