-- Consent checks: one row per admin consent a customer's admin granted. The web
-- records it (it holds no Microsoft credential); a worker verifies it with a real
-- token request, retrying with backoff while Entra propagates the consent, until it
-- is verified or the check's deadline passes.
CREATE TABLE consent_checks (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- The Entra tenant the consent was granted in (from the callback, checked
    -- against the customer's known tenant by the web).
    entra_tenant_id   uuid NOT NULL,
    -- Who started it, as the audit log names them (a member of staff, or the
    -- consent link an admin followed), for the audit entries of its outcome.
    requested_by      text NOT NULL,
    staff_id          uuid REFERENCES staff (id) ON DELETE SET NULL,
    requested_at      timestamptz NOT NULL DEFAULT now(),
    state             text NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'verified', 'failed')),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    -- A worker working the check, and until when its claim holds (a crashed
    -- worker's claim expires and another takes the check).
    claimed_by        text,
    claimed_until     timestamptz,
    -- The last refusal: its diagnosis key (e.g. AADSTS700016, MissingRole) and
    -- Microsoft's answer in its own words.
    last_error_code   text,
    last_error_detail text,
    finished_at       timestamptz,
    CHECK ((state = 'pending') = (finished_at IS NULL))
);

-- The due checks, for the workers' claim query.
CREATE INDEX consent_checks_due ON consent_checks (next_attempt_at) WHERE state = 'pending';
-- A customer's latest check, for its page and the API.
CREATE INDEX consent_checks_tenant ON consent_checks (tenant_id, requested_at DESC);
