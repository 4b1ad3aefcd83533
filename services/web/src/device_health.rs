//! Per-device health, the page a technician opens when a practice calls ("the
//! scanner doesn't send"): when each device was last seen (or never), its messages
//! and failures of the last 24 hours, what is queued, its failed logins of the last
//! 24 hours with the address the last one came from, and whether the edge has locked
//! it out. A customer's device list (searched, sorted, a page at a time) and a single
//! device are read with one aggregate query each, never a query per device: the
//! same query serves 5 devices and 10 000.

use mailbridge_core::ids::DeviceId;
use mailbridge_core::ids::TenantId;
use mailbridge_core::store::device_list;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::{
    error::{Error, Result},
    list_pager::parse_sort,
    tr,
};

/// Devices on one page of a customer's list.
pub const PAGE_SIZE: i64 = 50;
/// The most rows a list page may hold (`limit`).
pub const MAX_PAGE_SIZE: i64 = 200;
/// The deepest offset a list may be paged to: beyond it, search narrows better than
/// paging (and an offset that deep would make PostgreSQL skip that many rows).
pub const MAX_OFFSET: i64 = 10_000;

pub use mailbridge_core::store::device_list::DeviceHealth;

/// A search of a customer's devices (form and API alike).
#[derive(Debug, Default, Clone, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceQuery {
    /// Part of the name, site, username or an allowed sender (at most 200 characters).
    #[serde(default)]
    pub q: Option<String>,
    /// name (default), last_seen (longest unseen first), queued (most first) or
    /// failures (most in 24 h first).
    #[serde(default)]
    pub sort: Option<String>,
    /// Entries to skip (0–10000, default 0): the previous page's next_offset.
    #[serde(default)]
    pub offset: Option<String>,
    /// Entries per page (1–200, default 50).
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

/// A page of customer `tenant_id`'s devices with their health: searched, sorted.
pub async fn page(pool: &PgPool, tenant_id: TenantId, search: &DeviceQuery) -> Result<DevicePage> {
    let sort = parse_sort(search.sort.as_deref())?;
    let (offset, limit) = paging(search.offset.as_deref(), search.limit.as_deref(), PAGE_SIZE)?;
    let q = search.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let devices = device_list::page(pool, tenant_id, q, sort, offset, limit).await?;
    let total = match devices.first() {
        Some(d) => d.total,
        // Past the end of the list: how many there are, for the pager.
        None if offset > 0 => device_list::count(pool, tenant_id).await?,
        None => 0,
    };
    Ok(DevicePage {
        devices,
        total,
        offset,
        limit,
    })
}

/// One device of customer `tenant_id` with its health, or not found.
pub async fn one(pool: &PgPool, tenant_id: TenantId, device_id: DeviceId) -> Result<DeviceHealth> {
    device_list::one(pool, tenant_id, device_id)
        .await?
        .ok_or(Error::NotFound)
}

#[cfg(test)]
mod tests {
    use mailbridge_core::store::{ListSort, contains_pattern};

    use super::*;

    #[test]
    fn paging_is_capped_and_patterns_are_literal() {
        assert_eq!(paging(None, None, 50).unwrap(), (0, 50));
        assert_eq!(paging(Some("100"), Some("1000"), 50).unwrap(), (100, 200));
        assert!(paging(Some("-1"), None, 50).is_err());
        assert!(paging(Some("10001"), None, 50).is_err());
        assert_eq!(contains_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
        assert_eq!(parse_sort(Some("last_seen")).unwrap(), ListSort::LastSeen);
        assert!(parse_sort(Some("drop table")).is_err());
    }
}
