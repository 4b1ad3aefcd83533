-- Holds: a condition of a whole mailbox, customer or app (a throttle, a revoked
-- consent, an expired secret, an outage) stops that scope's deliveries as one,
-- instead of every message retrying into it on its own backoff. One message of the
-- scope is tried as a probe on a schedule; the moment a probe gets through, the
-- hold goes and every held message is due at once.
CREATE TABLE delivery_holds (
    -- 'app', 'customer' or 'mailbox'.
    scope text NOT NULL CHECK (scope IN ('app', 'customer', 'mailbox')),
    -- The app's client id, the customer's id, or the mailbox (lower case).
    subject text NOT NULL,
    -- For an app: a fingerprint of the credential that was refused, so that a new
    -- secret or certificate is not held by its predecessor's refusal. Empty otherwise.
    credential text NOT NULL DEFAULT '',
    -- The customer, for a customer or mailbox hold (shown on its page).
    tenant_id uuid REFERENCES tenants (id) ON DELETE CASCADE,
    -- The diagnosis key: why the scope is held.
    reason text NOT NULL,
    -- Microsoft's code and text as last heard.
    detail text NOT NULL DEFAULT '',
    since timestamptz NOT NULL DEFAULT now(),
    next_probe_at timestamptz NOT NULL,
    -- Probes that failed in a row: the schedule's backoff.
    probe_failures integer NOT NULL DEFAULT 0,
    last_probe_at timestamptz,
    -- Names the hold in the control plane ("retry now").
    id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    PRIMARY KEY (scope, subject, credential)
);

CREATE INDEX delivery_holds_next_probe ON delivery_holds (next_probe_at);
CREATE INDEX delivery_holds_tenant ON delivery_holds (tenant_id) WHERE tenant_id IS NOT NULL;

-- A Graph throttle is a mailbox hold with a known end (its first probe at
-- Retry-After); the tenant pause on token refusals is a customer or app hold.
DROP TABLE mailbox_throttles;
ALTER TABLE tenants DROP COLUMN paused_until, DROP COLUMN token_failures;
