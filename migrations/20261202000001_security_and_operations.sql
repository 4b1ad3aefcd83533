-- Security and operations: the relay listener in the device-change trigger, the
-- smart lockout, the purge's housekeeping, worker presence and mailbox throttles.

-- Port 25 only for relay devices: the listener decides whether an allow-list
-- identifies a device, so the edge's cache must forget on a listener change too.
DROP TRIGGER devices_changed ON devices;
CREATE TRIGGER devices_changed
    AFTER UPDATE OF tenant_id, username, password_hash, enabled, allowed_networks,
                    allowed_senders, sender_policy, rate_limit_per_minute, max_message_bytes,
                    listener
    ON devices FOR EACH STATEMENT EXECUTE FUNCTION notify_device_change();

-- Smart lockout, shared by every edge pod. Failed logins are counted per
-- (username, source), per source (across usernames) and per username (from sources
-- that are not familiar); `source` is the client's address, IPv6 as its /64.
CREATE TABLE login_failures (
    scope text NOT NULL CHECK (scope IN ('pair', 'source', 'username')),
    username text NOT NULL DEFAULT '',
    source inet NOT NULL DEFAULT '0.0.0.0/0',
    failures integer NOT NULL,
    window_start timestamptz NOT NULL DEFAULT now(),
    last_failure_at timestamptz NOT NULL DEFAULT now(),
    last_source inet NOT NULL,
    locked_until timestamptz,
    PRIMARY KEY (scope, username, source)
);
CREATE INDEX login_failures_username ON login_failures (username) WHERE username <> '';
CREATE INDEX login_failures_last_failure ON login_failures (last_failure_at);

-- Where each device has logged in successfully (its familiar sources): a username is
-- never locked out for these by failures from elsewhere.
CREATE TABLE device_sources (
    device_id uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    source inet NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, source)
);
CREATE INDEX device_sources_last_seen ON device_sources (last_seen_at);

-- The cluster's periodic jobs (the purge): when each last ran, so that N worker
-- replicas run it once per interval between them, not N times.
CREATE TABLE housekeeping (
    job text PRIMARY KEY,
    last_run_at timestamptz NOT NULL,
    runs bigint NOT NULL DEFAULT 1
);

-- Delivery workers alive now: each holds a session-level advisory lock on its
-- lock_key for as long as its connection lives, so the others can tell at once that
-- it died (the lock is gone) and deliver its leased messages without waiting for the
-- leases to expire.
CREATE TABLE workers (
    identity text PRIMARY KEY,
    lock_key bigint NOT NULL UNIQUE,
    started_at timestamptz NOT NULL DEFAULT now()
);

-- Mailboxes Microsoft told to wait (Graph 429/503 with Retry-After): every worker
-- leaves them alone until then, not only the one that heard it.
CREATE TABLE mailbox_throttles (
    mailbox text PRIMARY KEY,
    until timestamptz NOT NULL
);
