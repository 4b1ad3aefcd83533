//! The figures the customer overview and a customer's page show beside each
//! customer, read in one grouped statement each for all customers shown (or only
//! those of `only`): messages of the last 24 h by outcome, upstream refusals by
//! diagnosis, devices and the stale ones, consents still being verified.

use crate::ids::TenantId;
use std::collections::HashSet;

/// A customer's messages: queued now, and settled in the last 24 h by outcome.
#[derive(Debug, Clone, Copy)]
pub struct MessageCounts {
    pub tenant_id: TenantId,
    pub queued: i64,
    pub accepted: i64,
    pub bounced: i64,
    pub failed: i64,
}

pub async fn message_counts(
    pool: &sqlx::PgPool,
    only: Option<&[TenantId]>,
) -> Result<Vec<MessageCounts>, sqlx::Error> {
    sqlx::query_as!(
        MessageCounts,
        r#"SELECT tenant_id,
                  count(*) FILTER (WHERE state = 'queued') AS "queued!",
                  count(*) FILTER (WHERE state = 'accepted'
                                     AND finished_at > now() - interval '24 hours') AS "accepted!",
                  count(*) FILTER (WHERE state = 'bounced'
                                     AND finished_at > now() - interval '24 hours') AS "bounced!",
                  count(*) FILTER (WHERE state = 'failed'
                                     AND finished_at > now() - interval '24 hours') AS "failed!"
             FROM messages
            WHERE ($1::uuid[] IS NULL OR tenant_id = ANY($1))
              AND (state = 'queued' OR finished_at > now() - interval '24 hours')
            GROUP BY tenant_id"#,
        only as Option<&[TenantId]>
    )
    .fetch_all(pool)
    .await
}

/// Refused attempts of the last 24 h per customer and diagnosis (or upstream code).
#[derive(Debug)]
pub struct Refusals {
    pub tenant_id: TenantId,
    pub code: String,
    pub count: i64,
}

pub async fn refusals(
    pool: &sqlx::PgPool,
    only: Option<&[TenantId]>,
) -> Result<Vec<Refusals>, sqlx::Error> {
    sqlx::query_as!(
        Refusals,
        r#"SELECT m.tenant_id, COALESCE(a.diagnosis, a.upstream_code, 'unknown') AS "code!",
                  count(*) AS "count!"
             FROM delivery_attempts a JOIN messages m ON m.id = a.message_id
            WHERE a.started_at > now() - interval '24 hours' AND a.outcome <> 'accepted'
              AND ($1::uuid[] IS NULL OR m.tenant_id = ANY($1))
            GROUP BY 1, 2"#,
        only as Option<&[TenantId]>
    )
    .fetch_all(pool)
    .await
}

/// A customer's devices, and how many of the enabled ones were not seen for
/// `stale_days` days.
#[derive(Debug, Clone, Copy)]
pub struct DeviceCounts {
    pub tenant_id: TenantId,
    pub devices: i64,
    pub stale: i64,
}

pub async fn device_counts(
    pool: &sqlx::PgPool,
    only: Option<&[TenantId]>,
    stale_days: i32,
) -> Result<Vec<DeviceCounts>, sqlx::Error> {
    sqlx::query_as!(
        DeviceCounts,
        r#"SELECT tenant_id, count(*) AS "devices!",
                  count(*) FILTER (WHERE enabled AND COALESCE(last_seen_at, created_at)
                                       < now() - make_interval(days => $2)) AS "stale!"
             FROM devices WHERE ($1::uuid[] IS NULL OR tenant_id = ANY($1))
            GROUP BY tenant_id"#,
        only as Option<&[TenantId]>,
        stale_days
    )
    .fetch_all(pool)
    .await
}

/// Customers whose consent is still being verified.
pub async fn connecting(
    pool: &sqlx::PgPool,
    only: Option<&[TenantId]>,
) -> Result<HashSet<TenantId>, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        r#"SELECT tenant_id AS "tenant_id: TenantId" FROM consent_checks
          WHERE state = 'pending' AND ($1::uuid[] IS NULL OR tenant_id = ANY($1))"#,
        only as Option<&[TenantId]>
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect())
}

/// Every customer's id and name, by name.
pub async fn names(pool: &sqlx::PgPool) -> Result<Vec<(TenantId, String)>, sqlx::Error> {
    Ok(
        sqlx::query!("SELECT id AS \"id: TenantId\", name FROM tenants ORDER BY name")
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| (r.id, r.name))
            .collect(),
    )
}
