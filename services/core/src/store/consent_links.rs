//! Consent links made to be sent to a customer's admin (`consent_links`): stored
//! under the SHA-256 of their flow's `state`, bound to the customer's Entra tenant,
//! with when they were used and whether the consent was granted.

use crate::ids::TenantId;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ids::EntraTenantId;

/// A link as the customer's page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct SentLink {
    pub entra_tenant_id: EntraTenantId,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub granted: bool,
}

impl SentLink {
    /// Neither used nor expired: the customer's admin can still open it.
    pub fn open(&self) -> bool {
        self.used_at.is_none() && self.expires_at > Utc::now()
    }
}

/// Records a link made by `created_by`, valid for `lifetime`.
pub async fn record(
    pool: &sqlx::PgPool,
    state_hash: &[u8],
    tenant_id: TenantId,
    entra_tenant_id: EntraTenantId,
    created_by: &str,
    lifetime: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO consent_links (state_hash, tenant_id, entra_tenant_id, created_by, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
        state_hash,
        tenant_id as TenantId,
        entra_tenant_id.as_uuid(),
        created_by,
        lifetime.as_secs_f64()
    )
    .execute(pool)
    .await
    .map(drop)
}

/// The customer's admin came back through the link (whatever they answered).
pub async fn mark_used(pool: &sqlx::PgPool, state_hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE consent_links SET used_at = now() WHERE state_hash = $1 AND used_at IS NULL",
        state_hash
    )
    .execute(pool)
    .await
    .map(drop)
}

/// The consent answered through the link was granted.
pub async fn mark_granted(pool: &sqlx::PgPool, state_hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE consent_links SET granted = true WHERE state_hash = $1",
        state_hash
    )
    .execute(pool)
    .await
    .map(drop)
}

/// The customer's latest links, newest first.
pub async fn latest(
    pool: &sqlx::PgPool,
    tenant_id: TenantId,
    count: i64,
) -> Result<Vec<SentLink>, sqlx::Error> {
    sqlx::query_as!(
        SentLink,
        r#"SELECT entra_tenant_id AS "entra_tenant_id: EntraTenantId", created_by, created_at, expires_at, used_at, granted
           FROM consent_links WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT $2"#,
        tenant_id as TenantId,
        count
    )
    .fetch_all(pool)
    .await
}
