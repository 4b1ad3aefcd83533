-- The edge caches device credentials and allow-lists; every committed change to what
-- it looks up (the columns of devices::credential_query) tells it to forget them.
-- A column added to that query must be added here.
CREATE FUNCTION notify_device_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mailbridge_devices', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER devices_added_or_removed AFTER INSERT OR DELETE OR TRUNCATE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION notify_device_change();
CREATE TRIGGER devices_changed
    AFTER UPDATE OF tenant_id, username, password_hash, enabled, allowed_networks,
                    allowed_senders, sender_policy, rate_limit_per_minute, max_message_bytes
    ON devices FOR EACH STATEMENT EXECUTE FUNCTION notify_device_change();
CREATE TRIGGER tenants_changed
    AFTER UPDATE OF sender_mailbox, rate_limit_per_minute ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION notify_device_change();
