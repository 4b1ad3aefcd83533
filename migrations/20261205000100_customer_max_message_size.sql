-- Each customer's largest message, as its Exchange Online mailbox allows it: the
-- default maximum send size is 35 MB, an admin can raise it up to 150 MB. The edge
-- refuses larger messages at once (552 5.3.4) rather than accepting what Microsoft
-- will refuse.
ALTER TABLE tenants
    ADD COLUMN max_message_bytes bigint NOT NULL DEFAULT 36700160
        CONSTRAINT tenants_max_message_bytes_range
        CHECK (max_message_bytes BETWEEN 1048576 AND 157286400);

-- The edge caches the customer's limit with each device's credential: a change must
-- reach it.
DROP TRIGGER tenants_changed ON tenants;
CREATE TRIGGER tenants_changed
    AFTER UPDATE OF sender_mailbox, rate_limit_per_minute, max_message_bytes ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION notify_device_change();
