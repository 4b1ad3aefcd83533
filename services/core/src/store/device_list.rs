//! A customer's devices with their health, as the control plane lists them: the
//! messages of the last 24 hours and the queue grouped by device, and the login
//! failures of the devices' usernames (the edge's lockout counters), searched,
//! sorted and paged in one statement.

use crate::ids::DeviceId;
use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::Serialize;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};

use super::{ListSort, contains_pattern};
use crate::devices::Device;

/// A device with its health.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct DeviceHealth {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub device: Device,
    /// Messages received from it in the last 24 hours.
    pub messages_24h: i64,
    /// Its messages that failed in the last 24 hours.
    pub failed_24h: i64,
    /// Its messages waiting or being delivered.
    pub queued: i64,
    /// Wrong passwords for its username in the last 24 hours (every source).
    pub failed_logins_24h: i64,
    pub last_failed_login_at: Option<DateTime<Utc>>,
    /// The address the last wrong password came from.
    pub last_failed_login_from: Option<IpNet>,
    /// Set while any lock of its username holds (the latest one's end).
    pub locked_until: Option<DateTime<Utc>>,
    /// Devices matching the search (the same on every row of a page).
    #[serde(skip)]
    pub total: i64,
}

impl DeviceHealth {
    pub fn locked(&self) -> bool {
        self.locked_until.is_some()
    }

    /// The address of the last failed login, without a /32 or /128.
    pub fn last_failed_from(&self) -> String {
        self.last_failed_login_from
            .map(|n| n.addr().to_string())
            .unwrap_or_default()
    }
}

/// The ORDER BY of the device list for `sort`.
fn order_by(sort: ListSort) -> &'static str {
    match sort {
        ListSort::Name => " ORDER BY d.name, d.id",
        ListSort::LastSeen => " ORDER BY d.last_seen_at ASC NULLS FIRST, d.name, d.id",
        ListSort::Queued => " ORDER BY COALESCE(m.queued, 0) DESC, d.name, d.id",
        ListSort::Failures => {
            " ORDER BY COALESCE(m.failed_24h, 0) + COALESCE(l.failed_logins_24h, 0) DESC,
                       COALESCE(m.failed_24h, 0) DESC, d.name, d.id"
        }
    }
}

/// The select list and the aggregates: the customer's messages of the last 24 hours
/// and its queue grouped by device, and the login failures of the devices' usernames
/// grouped by username (the edge's lockout counters).
fn base_query(tenant_id: TenantId) -> QueryBuilder<Postgres> {
    let mut query = QueryBuilder::new(
        "WITH m AS (
            SELECT device_id,
                   count(*) FILTER (WHERE received_at > now() - interval '24 hours') AS messages_24h,
                   count(*) FILTER (WHERE state = 'failed' AND finished_at > now() - interval '24 hours') AS failed_24h,
                   count(*) FILTER (WHERE state = 'queued') AS queued
              FROM messages
             WHERE tenant_id = ",
    );
    query
        .push_bind(tenant_id)
        .push(
            " AND device_id IS NOT NULL
               AND (received_at > now() - interval '24 hours' OR state = 'queued'
                    OR finished_at > now() - interval '24 hours')
             GROUP BY device_id),
         l AS (
            SELECT f.username,
                   COALESCE(sum(f.failures) FILTER (WHERE f.scope = 'pair' AND f.last_failure_at > now() - interval '24 hours'), 0)::int8 AS failed_logins_24h,
                   max(f.last_failure_at) AS last_failed_login_at,
                   (array_agg(f.last_source ORDER BY f.last_failure_at DESC))[1] AS last_failed_login_from,
                   max(f.locked_until) FILTER (WHERE f.locked_until > now()) AS locked_until
              FROM login_failures f
             WHERE f.username IN (SELECT username FROM devices WHERE tenant_id = ",
        )
        .push_bind(tenant_id)
        .push(
            ")
             GROUP BY f.username)
         SELECT d.id, d.tenant_id, d.name, d.username, d.enabled, d.created_at, d.last_seen_at,
                d.allowed_networks, d.allowed_senders, d.sender_policy, d.rate_limit_per_minute,
                d.kind, d.site, d.listener, d.legacy_tls, d.model_family,
                COALESCE(m.messages_24h, 0) AS messages_24h, COALESCE(m.failed_24h, 0) AS failed_24h,
                COALESCE(m.queued, 0) AS queued, COALESCE(l.failed_logins_24h, 0) AS failed_logins_24h,
                l.last_failed_login_at, l.last_failed_login_from, l.locked_until,
                count(*) OVER () AS total
           FROM devices d LEFT JOIN m ON m.device_id = d.id LEFT JOIN l ON l.username = d.username
          WHERE d.tenant_id = ",
        )
        .push_bind(tenant_id);
    query
}

/// A page of customer `tenant_id`'s devices with their health: those matching `q`
/// (part of the name, site, username or an allowed sender), sorted, `limit` from
/// `offset`.
pub async fn page(
    pool: &PgPool,
    tenant_id: TenantId,
    q: Option<&str>,
    sort: ListSort,
    offset: i64,
    limit: i64,
) -> Result<Vec<DeviceHealth>, sqlx::Error> {
    let mut query = base_query(tenant_id);
    if let Some(q) = q {
        let pattern = contains_pattern(q);
        query
            .push(" AND (d.name ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR d.site ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR d.username ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR EXISTS (SELECT 1 FROM unnest(d.allowed_senders) s WHERE s ILIKE ")
            .push_bind(pattern)
            .push("))");
    }
    super::page_window(&mut query, order_by(sort), offset, limit);
    query.build_query_as().fetch_all(pool).await
}

/// How many devices customer `tenant_id` has.
pub async fn count(pool: &PgPool, tenant_id: TenantId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM devices WHERE tenant_id = $1"#,
        tenant_id as TenantId
    )
    .fetch_one(pool)
    .await
}

/// One device of customer `tenant_id` with its health.
pub async fn one(
    pool: &PgPool,
    tenant_id: TenantId,
    device_id: DeviceId,
) -> Result<Option<DeviceHealth>, sqlx::Error> {
    let mut query = base_query(tenant_id);
    query.push(" AND d.id = ").push_bind(device_id);
    query.build_query_as().fetch_optional(pool).await
}
