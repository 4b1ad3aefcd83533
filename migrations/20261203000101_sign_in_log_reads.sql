-- The migration board's reads of customers' Entra sign-in logs: when each customer
-- is next due, which worker holds it (so that two replicas never read one tenant at
-- once) and how the last read went.
CREATE TABLE smtp_auth_signin_reads (
    tenant_id         uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    next_read_at      timestamptz NOT NULL DEFAULT now(),
    lease_owner       text,
    lease_expires_at  timestamptz,
    last_read_at      timestamptz,
    -- Why the last read failed (e.g. Graph's 403 without AuditLog.Read.All or P1).
    last_error        text,
    last_error_at     timestamptz
);
CREATE INDEX smtp_auth_signin_reads_due ON smtp_auth_signin_reads (next_read_at);
