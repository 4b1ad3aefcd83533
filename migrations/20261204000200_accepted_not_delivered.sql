-- "delivered" becomes "accepted": Graph's 202 and SMTP's 250 mean that Microsoft
-- accepted the message, not that it reached its recipient (a bounce may follow, the
-- new state "bounced"). Messages take the states queued, delivering, accepted,
-- bounced and failed; attempts the outcomes accepted, retry and permanent.
--
-- The rename is split into several migrations so that no step holds a lock that
-- stops the edge or the workers for longer than a moment on a big table:
--   0200 (this one): swap the CHECK constraints for new ones added NOT VALID (an
--        ACCESS EXCLUSIVE lock for the catalogue change only: existing rows are not
--        scanned), and a trigger that turns a 'delivered' written by a pod of the
--        previous version (still running during the rollout) into 'accepted'.
--   0201, 0202: the new partial indexes, built CONCURRENTLY (no write lock).
--   0203: the existing rows rewritten (row locks on finished rows only: nobody
--        else writes them) and the constraints validated (SHARE UPDATE EXCLUSIVE:
--        reads and writes go on).
--   0204, 0205: the old partial indexes dropped CONCURRENTLY.
-- lock_timeout makes this step give up rather than queue behind a long transaction
-- (every query of the table would then wait behind it); the init container retries.
SET LOCAL lock_timeout = '5s';

ALTER TABLE messages DROP CONSTRAINT messages_state_check,
    ADD CONSTRAINT messages_state_check
        CHECK (state IN ('queued', 'delivering', 'accepted', 'bounced', 'failed')) NOT VALID;

ALTER TABLE delivery_attempts DROP CONSTRAINT delivery_attempts_outcome_check,
    ADD CONSTRAINT delivery_attempts_outcome_check
        CHECK (outcome IN ('accepted', 'retry', 'permanent')) NOT VALID;

-- The previous version writes 'delivered'; BEFORE triggers run before CHECK
-- constraints, so its writes succeed and are stored as 'accepted'. The WHEN clause
-- keeps every other write from calling the function at all. A later release drops
-- both triggers.
CREATE FUNCTION delivered_is_accepted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'messages' THEN
        NEW.state := 'accepted';
    ELSE
        NEW.outcome := 'accepted';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER messages_delivered_is_accepted BEFORE INSERT OR UPDATE ON messages
    FOR EACH ROW WHEN (NEW.state = 'delivered') EXECUTE FUNCTION delivered_is_accepted();
CREATE TRIGGER delivery_attempts_delivered_is_accepted BEFORE INSERT OR UPDATE ON delivery_attempts
    FOR EACH ROW WHEN (NEW.outcome = 'delivered') EXECUTE FUNCTION delivered_is_accepted();
