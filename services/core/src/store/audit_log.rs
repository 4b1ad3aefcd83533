//! The audit log (`audit_log`): its one write — who changed what, for which
//! customer, from where; the control plane, the migration board and the command line
//! all record through here, inside their own transaction where they have one — and
//! the search the audit page and the API read it with.

use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::Serialize;
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
    tenant_id: Option<TenantId>,
    target: Option<&str>,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO audit_log (actor, staff_id, action, tenant_id, target, details, client_addr)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        who.label,
        who.staff_id,
        action,
        tenant_id as Option<TenantId>,
        target,
        details,
        who.client_addr
    )
    .execute(executor)
    .await
    .map(drop)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub tenant_id: Option<TenantId>,
    pub tenant_name: Option<String>,
    pub target: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub client_addr: Option<String>,
}

/// Which entries a search wants; every part optional.
#[derive(Debug, Default)]
pub struct Search<'a> {
    pub tenant_id: Option<TenantId>,
    /// Who acted, any case.
    pub actor: Option<&'a str>,
    /// Actions starting with this (`device.` finds every device action).
    pub action_prefix: Option<&'a str>,
    /// Entries older than this id (the next page).
    pub before: Option<i64>,
    pub limit: i64,
}

/// Newest first, one page.
pub async fn search(
    pool: &sqlx::PgPool,
    search: &Search<'_>,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    // LIKE's own wildcards in the prefix are taken literally.
    let action_like = search
        .action_prefix
        .map(|a| format!("{}%", a.replace(['\\', '%', '_'], "")));
    sqlx::query_as!(
        AuditEntry,
        r#"SELECT a.id, a.at, a.actor, a.action, a.tenant_id AS "tenant_id: TenantId", t.name AS "tenant_name?",
                  a.target, a.details, host(a.client_addr) AS client_addr
             FROM audit_log a LEFT JOIN tenants t ON t.id = a.tenant_id
            WHERE ($1::uuid IS NULL OR a.tenant_id = $1)
              AND ($2::text IS NULL OR lower(a.actor) = lower($2))
              AND ($3::text IS NULL OR a.action LIKE $3)
              AND ($4::bigint IS NULL OR a.id < $4)
            ORDER BY a.id DESC LIMIT $5"#,
        search.tenant_id as Option<TenantId>,
        search.actor,
        action_like,
        search.before,
        search.limit
    )
    .fetch_all(pool)
    .await
}
