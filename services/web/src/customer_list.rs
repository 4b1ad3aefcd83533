//! The customer overview as a list that scales to thousands of customers: search
//! (name or sender mailbox), sort (name, last seen device, queued, failures) and
//! paging by offset with a cap. One query picks the page's customers (its
//! aggregates grouped over all customers, so any sort is exact); their health is
//! then read for that page only.
//!
//! Offset paging, not a keyset: the list sorts by counts that change between two
//! clicks, where a keyset cursor would skip or repeat rows just the same, and an MSP
//! has thousands of customers, not millions: an offset is capped at
//! [`device_health::MAX_OFFSET`], beyond which the search narrows better.

use mailbridge_core::ids::TenantId;
use mailbridge_core::store::customer_list;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::{
    customers::{self, CustomerView},
    device_health::{self, paging},
    error::Result,
    list_pager::parse_sort,
    roles::CustomerScope,
};

/// Customers on one page of the overview.
pub const PAGE_SIZE: i64 = 50;

/// A search of the overview (page and API alike).
#[derive(Debug, Default, Clone, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CustomerQuery {
    /// Part of the name or the sender mailbox (at most 200 characters).
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

/// One page of the overview.
#[derive(Debug)]
pub struct CustomerPage {
    pub customers: Vec<CustomerView>,
    pub total: i64,
    pub offset: i64,
    pub limit: i64,
}

impl CustomerPage {
    pub fn previous_offset(&self) -> Option<i64> {
        (self.offset > 0).then(|| (self.offset - self.limit).max(0))
    }

    pub fn next_offset(&self) -> Option<i64> {
        let next = self.offset + self.limit;
        (next < self.total && next <= device_health::MAX_OFFSET).then_some(next)
    }

    pub fn first_row(&self) -> i64 {
        if self.customers.is_empty() {
            0
        } else {
            self.offset + 1
        }
    }

    pub fn last_row(&self) -> i64 {
        self.offset + self.customers.len() as i64
    }
}

/// The customers `scope` sees matching `search`, a page at a time, with their health.
pub async fn page(
    pool: &PgPool,
    scope: &CustomerScope,
    search: &CustomerQuery,
) -> Result<CustomerPage> {
    let sort = parse_sort(search.sort.as_deref())?;
    let (offset, limit) = paging(search.offset.as_deref(), search.limit.as_deref(), PAGE_SIZE)?;
    let search = customer_list::Search {
        seen: scope.only(),
        q: search.q.as_deref().map(str::trim).filter(|q| !q.is_empty()),
    };
    let picked = customer_list::pick(pool, &search, sort, offset, limit).await?;
    let total = match picked.first() {
        Some(p) => p.total,
        // Past the end of the list: how many match, for the pager.
        None if offset > 0 => customer_list::count(pool, &search).await?,
        None => 0,
    };
    let ids: Vec<TenantId> = picked.iter().map(|p| p.id).collect();
    let customers = if ids.is_empty() {
        Vec::new()
    } else {
        customers::with_health_of(pool, &ids, scope).await?
    };
    Ok(CustomerPage {
        customers,
        total,
        offset,
        limit,
    })
}
