-- A secret shown once after a form (a new device password, a new API token), kept
-- for that one view (redirect-after-POST): the page that shows it is a GET that can
-- be reloaded or switched to another language without re-sending the form. It is
-- sealed with a key that only the browser that sent the form holds (in a cookie
-- scoped to that page): this row alone reveals nothing. Opened once, then deleted;
-- expired rows are swept.
CREATE TABLE secret_reveals (
    id         uuid PRIMARY KEY,
    -- The device or API token the secret belongs to.
    subject_id uuid NOT NULL,
    staff_id   uuid,
    rotated    boolean NOT NULL,
    sealed     bytea NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX secret_reveals_expiry ON secret_reveals (expires_at);
