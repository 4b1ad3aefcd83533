-- The rows written before the rename (see 0200). The UPDATEs take a ROW EXCLUSIVE
-- lock on the tables (which does not conflict with the edge's inserts or the
-- workers' updates) and row locks on finished rows, which only the purge touches;
-- VALIDATE CONSTRAINT then scans with a SHARE UPDATE EXCLUSIVE lock, which lets
-- reads and writes go on. The rewrite is one pass over the finished rows the
-- retention keeps (MAILBRIDGE_MESSAGE_RETENTION); autovacuum reclaims the old versions.
UPDATE messages SET state = 'accepted' WHERE state = 'delivered';
UPDATE delivery_attempts SET outcome = 'accepted' WHERE outcome = 'delivered';
ALTER TABLE messages VALIDATE CONSTRAINT messages_state_check;
ALTER TABLE delivery_attempts VALIDATE CONSTRAINT delivery_attempts_outcome_check;
