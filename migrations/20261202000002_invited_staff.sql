-- Staff who are invited. A newcomer who signs in uninvited waits as 'pending' and
-- sees no customer data until an owner or admin approves them with a role.
ALTER TABLE staff DROP CONSTRAINT staff_role_check,
    ADD CONSTRAINT staff_role_check
        CHECK (role IN ('owner', 'admin', 'technician', 'readonly', 'pending'));

-- Invitations by e-mail address (the verified address or UPN of the first sign-in),
-- made on the Staff page or by `mailbridge staff add`.
CREATE TABLE staff_invitations (
    email      text PRIMARY KEY CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 320),
    role       text NOT NULL CHECK (role IN ('owner', 'admin', 'technician', 'readonly')),
    invited_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One-time codes that make the first owner, printed in the web's log at start while
-- nobody is owner; only their SHA-256 is kept.
CREATE TABLE staff_bootstrap_codes (
    code_hash  bytea PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A sign-in started with a bootstrap code carries its hash to the callback.
ALTER TABLE oauth_flows ADD COLUMN bootstrap_hash bytea;
-- Stale flows are removed by age.
CREATE INDEX oauth_flows_created ON oauth_flows (created_at);

-- API tokens expire (tokens made before this get 90 days from now).
ALTER TABLE api_tokens ADD COLUMN expires_at timestamptz;
UPDATE api_tokens SET expires_at = now() + interval '90 days';
ALTER TABLE api_tokens ALTER COLUMN expires_at SET NOT NULL;
