-- A customer's own app registration may authenticate with a certificate (private_key_jwt)
-- instead of a client secret: exactly one of the two, sealed with the master key.
ALTER TABLE tenants
    DROP CONSTRAINT tenants_check,
    ADD COLUMN client_certificate_sealed bytea,
    ADD CONSTRAINT tenants_own_app_credential CHECK (
        (client_id IS NULL AND client_secret_sealed IS NULL AND client_certificate_sealed IS NULL)
        OR (client_id IS NOT NULL AND ((client_secret_sealed IS NULL) <> (client_certificate_sealed IS NULL)))
    );
