-- Recipients delivered per mailbox and hour, kept as deliveries settle: the daily
-- limit (10 000 recipients per mailbox) is checked against at most 25 rows instead
-- of a day of attempts joined with their messages, and survives the purge of
-- finished messages.
CREATE TABLE mailbox_usage (
    mailbox text NOT NULL,
    hour timestamptz NOT NULL,
    recipients bigint NOT NULL,
    PRIMARY KEY (mailbox, hour)
);

INSERT INTO mailbox_usage (mailbox, hour, recipients)
SELECT a.mailbox, date_trunc('hour', a.started_at, 'UTC'), sum(cardinality(m.rcpt_to))
  FROM delivery_attempts a JOIN messages m ON m.id = a.message_id
 WHERE a.outcome = 'delivered' AND a.mailbox IS NOT NULL
   AND a.started_at > now() - interval '25 hours'
 GROUP BY 1, 2;

-- The per-minute count is of SMTP attempts only (Exchange's 30 messages a minute).
DROP INDEX delivery_attempts_mailbox;
CREATE INDEX delivery_attempts_mailbox_smtp ON delivery_attempts (mailbox, started_at)
    WHERE method = 'smtp' AND mailbox IS NOT NULL;
