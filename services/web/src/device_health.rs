//! Per-device health, the page a technician opens when a practice calls ("the
//! scanner doesn't send"): when each device was last seen (or never), its messages
//! and failures of the last 24 hours, what is queued, its failed logins of the last
//! 24 hours with the address the last one came from, and whether the edge has locked
//! it out. A customer's device list (searched, sorted, a page at a time) and a single
//! device are read with one aggregate query each, never a query per device: the
//! same query serves 5 devices and 10 000.

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use mailbridge_core::devices::Device;
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{
    error::{Error, Result},
    list_pager::ListSort,
    tr,
};

/// Devices on one page of a customer's list.
pub const PAGE_SIZE: i64 = 50;
/// The most rows a list page may hold (`limit`).
pub const MAX_PAGE_SIZE: i64 = 200;
/// The deepest offset a list may be paged to: beyond it, search narrows better than
/// paging (and an offset that deep would make PostgreSQL skip that many rows).
pub const MAX_OFFSET: i64 = 10_000;

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

/// A search of a customer's devices (form and API alike).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct DeviceQuery {
    /// Part of the name, site, username or an allowed sender.
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub sort: Option<String>,
    #[serde(default)]
    pub offset: Option<String>,
    #[serde(default)]
    pub limit: Option<String>,
}

/// The page asked for: offset and size, capped.
pub fn paging(offset: Option<&str>, limit: Option<&str>, default: i64) -> Result<(i64, i64)> {
    let number = |text: Option<&str>, fallback: i64| -> Result<i64> {
        match text.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(fallback),
            Some(t) => {
                t.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| Error::InvalidValue {
                        text: tr!("{} is not a page position."),
                        value: t.to_owned(),
                    })
            }
        }
    };
    let offset = number(offset, 0)?;
    if offset > MAX_OFFSET {
        return Err(Error::Invalid(
            tr!("That page is too far back: narrow the list with the search instead.").into(),
        ));
    }
    Ok((offset, number(limit, default)?.clamp(1, MAX_PAGE_SIZE)))
}

/// A `LIKE` pattern matching `text` anywhere, its wildcards taken literally.
pub fn contains_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// One page of devices with their health.
#[derive(Debug, Serialize)]
pub struct DevicePage {
    pub devices: Vec<DeviceHealth>,
    /// Devices matching the search.
    pub total: i64,
    pub offset: i64,
    pub limit: i64,
}

impl DevicePage {
    pub fn previous_offset(&self) -> Option<i64> {
        (self.offset > 0).then(|| (self.offset - self.limit).max(0))
    }

    pub fn next_offset(&self) -> Option<i64> {
        let next = self.offset + self.limit;
        (next < self.total && next <= MAX_OFFSET).then_some(next)
    }

    pub fn first_row(&self) -> i64 {
        if self.devices.is_empty() {
            0
        } else {
            self.offset + 1
        }
    }

    pub fn last_row(&self) -> i64 {
        self.offset + self.devices.len() as i64
    }
}

/// The select list and the aggregates: the customer's messages of the last 24 hours
/// and its queue grouped by device, and the login failures of the devices' usernames
/// grouped by username (the edge's lockout counters).
fn base_query(tenant_id: Uuid) -> QueryBuilder<Postgres> {
    let mut query = QueryBuilder::new(
        "WITH m AS (
            SELECT device_id,
                   count(*) FILTER (WHERE received_at > now() - interval '24 hours') AS messages_24h,
                   count(*) FILTER (WHERE state = 'failed' AND finished_at > now() - interval '24 hours') AS failed_24h,
                   count(*) FILTER (WHERE state IN ('queued', 'delivering')) AS queued
              FROM messages
             WHERE tenant_id = ",
    );
    query
        .push_bind(tenant_id)
        .push(
            " AND device_id IS NOT NULL
               AND (received_at > now() - interval '24 hours' OR state IN ('queued', 'delivering')
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

/// A page of customer `tenant_id`'s devices with their health: searched, sorted.
pub async fn page(pool: &PgPool, tenant_id: Uuid, search: &DeviceQuery) -> Result<DevicePage> {
    let sort = ListSort::parse(search.sort.as_deref())?;
    let (offset, limit) = paging(search.offset.as_deref(), search.limit.as_deref(), PAGE_SIZE)?;
    let mut query = base_query(tenant_id);
    if let Some(q) = search.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
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
    query
        .push(order_by(sort))
        .push(" LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
    let devices: Vec<DeviceHealth> = query.build_query_as().fetch_all(pool).await?;
    let total = match devices.first() {
        Some(d) => d.total,
        // Past the end of the list: how many there are, for the pager.
        None if offset > 0 => count(pool, tenant_id).await?,
        None => 0,
    };
    Ok(DevicePage {
        devices,
        total,
        offset,
        limit,
    })
}

async fn count(pool: &PgPool, tenant_id: Uuid) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM devices WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_one(pool)
            .await?,
    )
}

/// One device of customer `tenant_id` with its health, or not found.
pub async fn one(pool: &PgPool, tenant_id: Uuid, device_id: Uuid) -> Result<DeviceHealth> {
    let mut query = base_query(tenant_id);
    query.push(" AND d.id = ").push_bind(device_id);
    query
        .build_query_as()
        .fetch_optional(pool)
        .await?
        .ok_or(Error::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_is_capped_and_patterns_are_literal() {
        assert_eq!(paging(None, None, 50).unwrap(), (0, 50));
        assert_eq!(paging(Some("100"), Some("1000"), 50).unwrap(), (100, 200));
        assert!(paging(Some("-1"), None, 50).is_err());
        assert!(paging(Some("10001"), None, 50).is_err());
        assert_eq!(contains_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
        assert_eq!(
            ListSort::parse(Some("last_seen")).unwrap(),
            ListSort::LastSeen
        );
        assert!(ListSort::parse(Some("drop table")).is_err());
    }
}
