-- Least privilege per customer: how the MSP app may reach the customer's mailboxes on
-- the Graph path. 'limited': the admin consent grants no tenant-wide mail permission
-- and Exchange Online RBAC for Applications limits the app to the sender mailbox (a
-- script the customer's admin runs); 'tenant_wide': Entra application permissions
-- Mail.Send / Mail.ReadWrite for every mailbox of the tenant.
CREATE TABLE tenant_permissions (
    tenant_id             uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    mode                  text NOT NULL CHECK (mode IN ('limited', 'tenant_wide')),
    -- The object id of the app's service principal (enterprise application) in the
    -- customer's tenant: the `oid` of its app-only tokens, needed by the script.
    service_principal_id  uuid,
    -- The tenant-wide mail app roles (Mail.Send, Mail.ReadWrite, Mail.Read …) the
    -- last inspected Graph token carried, and when it was inspected.
    tenant_wide_roles     text[] NOT NULL DEFAULT '{}',
    roles_seen_at         timestamptz,
    -- Limited mode: when a message sent as the sender mailbox was first accepted
    -- without a tenant-wide role (the Exchange script is in place).
    exchange_verified_at  timestamptz,
    -- The message mailbridge sent as the sender mailbox to prove it.
    verification_message_id uuid
);

-- Customers that exist already were onboarded with tenant-wide permissions.
INSERT INTO tenant_permissions (tenant_id, mode) SELECT id, 'tenant_wide' FROM tenants;
