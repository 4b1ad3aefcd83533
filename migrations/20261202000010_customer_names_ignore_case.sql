-- Customer names are unique regardless of case: "Praxis Kühn" and "praxis kühn" are
-- one customer to the people choosing from a list, and the CLI finds customers by
-- name. Existing names that differ only in case would make the unique index fail, so
-- each such name after the first (by creation) is renamed first, with a suffix
-- " (2)", " (3)" … not already taken, and the rename is written to the audit log.
DO $$
DECLARE
    dup       record;
    candidate text;
    n         int;
BEGIN
    FOR dup IN
        SELECT id, name FROM (
            SELECT id, name,
                   row_number() OVER (PARTITION BY lower(name) ORDER BY created_at, id) AS rank
              FROM tenants
        ) ranked
         WHERE rank > 1
         ORDER BY lower(name), rank
    LOOP
        n := 2;
        LOOP
            candidate := left(dup.name, 190) || ' (' || n || ')';
            EXIT WHEN NOT EXISTS (SELECT 1 FROM tenants WHERE lower(name) = lower(candidate));
            n := n + 1;
        END LOOP;
        UPDATE tenants SET name = candidate WHERE id = dup.id;
        INSERT INTO audit_log (actor, action, tenant_id, target, details)
        VALUES ('migration', 'customer.update', dup.id, candidate,
                jsonb_build_object(
                    'name', jsonb_build_array(dup.name, candidate),
                    'reason', 'customer names are unique regardless of case'));
    END LOOP;
END
$$;

-- The index keeps the name of the constraint it replaces: a violation is reported as
-- "a customer with this name already exists" by every client, as before.
ALTER TABLE tenants DROP CONSTRAINT tenants_name_key;
CREATE UNIQUE INDEX tenants_name_key ON tenants (lower(name));
-- Lookups by the exact name (the CLI's --tenant) keep an index.
CREATE INDEX tenants_name ON tenants (name);
