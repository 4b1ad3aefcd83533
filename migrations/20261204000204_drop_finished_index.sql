-- no-transaction
-- Replaced by messages_settled (0201); dropped without an exclusive lock.
DROP INDEX CONCURRENTLY IF EXISTS messages_finished;
