-- Every row that belongs to one customer names that customer.
--
-- The children of a message (`delivery_attempts`, `message_bodies`,
-- `message_bounces`) and of a device (`device_sources`, and `session_transcripts`
-- of a known device) reached their customer only through their parent. With
-- `tenant_id` on them, the schema can be distributed by customer (the rows of one
-- customer co-located with its messages and devices, docs/scaling.md), and a
-- customer's rows can be counted, exported or purged without the join. The
-- writers set it from the parent's row in the same statement.
--
-- Rollout from the previous version: its edges and workers (and the previous
-- version after a rollback) write these rows without `tenant_id`. A trigger fills
-- it from the parent for such a row; it fires only when the column is NULL, so it
-- costs the new writers nothing. It is dropped one release later.
--
-- Like the state rename (0200–0205), the change is split so that no step holds a
-- lock that stops the edge or the workers for longer than a moment:
--   0100 (this one): the columns (nullable, no default: the catalogue only), the
--        triggers, and CHECK constraints added NOT VALID (enforced for new rows,
--        existing rows not scanned). lock_timeout makes it give up rather than
--        queue behind a long transaction; the init container retries.
--   0101: the bodies and familiar sources filled (few rows, written by the hot
--        paths: their own short transaction).
--   0102: the attempts, bounces and transcripts filled (row locks on rows that
--        only the purge touches).
--   0103: the constraints validated (SHARE UPDATE EXCLUSIVE: reads and writes go
--        on), then NOT NULL set, which the valid constraint lets PostgreSQL do
--        without scanning again (a moment of ACCESS EXCLUSIVE).
SET LOCAL lock_timeout = '5s';

ALTER TABLE delivery_attempts ADD COLUMN tenant_id uuid;
ALTER TABLE message_bodies ADD COLUMN tenant_id uuid;
ALTER TABLE message_bounces ADD COLUMN tenant_id uuid;
ALTER TABLE device_sources ADD COLUMN tenant_id uuid;
ALTER TABLE session_transcripts ADD COLUMN tenant_id uuid;

-- For the previous version's writers: the customer of the row's message or device.
CREATE FUNCTION fill_tenant_of_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT tenant_id INTO NEW.tenant_id FROM messages WHERE id = NEW.message_id;
    RETURN NEW;
END
$$;
CREATE FUNCTION fill_tenant_of_device() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT tenant_id INTO NEW.tenant_id FROM devices WHERE id = NEW.device_id;
    RETURN NEW;
END
$$;
CREATE TRIGGER delivery_attempts_tenant BEFORE INSERT ON delivery_attempts
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION fill_tenant_of_message();
CREATE TRIGGER message_bodies_tenant BEFORE INSERT ON message_bodies
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION fill_tenant_of_message();
CREATE TRIGGER message_bounces_tenant BEFORE INSERT ON message_bounces
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION fill_tenant_of_message();
CREATE TRIGGER device_sources_tenant BEFORE INSERT ON device_sources
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION fill_tenant_of_device();
CREATE TRIGGER session_transcripts_tenant BEFORE INSERT ON session_transcripts
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL AND NEW.device_id IS NOT NULL)
    EXECUTE FUNCTION fill_tenant_of_device();

ALTER TABLE delivery_attempts ADD CONSTRAINT delivery_attempts_tenant_named
    CHECK (tenant_id IS NOT NULL) NOT VALID;
ALTER TABLE message_bodies ADD CONSTRAINT message_bodies_tenant_named
    CHECK (tenant_id IS NOT NULL) NOT VALID;
ALTER TABLE message_bounces ADD CONSTRAINT message_bounces_tenant_named
    CHECK (tenant_id IS NOT NULL) NOT VALID;
ALTER TABLE device_sources ADD CONSTRAINT device_sources_tenant_named
    CHECK (tenant_id IS NOT NULL) NOT VALID;
-- A transcript of a session that never named a known device belongs to no customer.
ALTER TABLE session_transcripts ADD CONSTRAINT session_transcripts_tenant_of_device
    CHECK ((device_id IS NULL) = (tenant_id IS NULL)) NOT VALID;
