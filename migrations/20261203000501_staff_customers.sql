-- Technicians and read-only staff can be limited to the customers assigned to them
-- (a team that looks after its own practices sees no other practice's mail). Owners
-- and admins always see every customer.
ALTER TABLE staff ADD COLUMN all_customers boolean NOT NULL DEFAULT true;

CREATE TABLE staff_customers (
    staff_id  uuid NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    PRIMARY KEY (staff_id, tenant_id)
);
CREATE INDEX staff_customers_tenant ON staff_customers (tenant_id);
