-- Exchange Online's limits are per mailbox, so attempts record the mailbox they were
-- made as; the workers of every pod count them together.
ALTER TABLE delivery_attempts ADD COLUMN mailbox text;
CREATE INDEX delivery_attempts_mailbox ON delivery_attempts (mailbox, started_at) WHERE mailbox IS NOT NULL;
