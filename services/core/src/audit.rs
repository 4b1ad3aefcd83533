//! The audit log's one write: who changed what, for which customer, from where.
//! The control plane, the migration board and the command line all record through
//! here, inside their own transaction where they have one.

use ipnet::IpNet;
use uuid::Uuid;

/// Who made a change, as the audit log names them.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// An e-mail address, `api-token:<name>`, or what part of mailbridge acted.
    pub label: &'a str,
    pub staff_id: Option<Uuid>,
    pub client_addr: Option<IpNet>,
}

/// Records one change by `who`.
pub async fn record<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    who: Who<'_>,
    action: &str,
    tenant_id: Option<Uuid>,
    target: Option<&str>,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (actor, staff_id, action, tenant_id, target, details, client_addr)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(who.label)
    .bind(who.staff_id)
    .bind(action)
    .bind(tenant_id)
    .bind(target)
    .bind(details)
    .bind(who.client_addr)
    .execute(executor)
    .await
    .map(drop)
}
