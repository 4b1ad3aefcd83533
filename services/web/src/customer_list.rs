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

use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{
    customers::{self, CustomerView},
    device_health::{self, contains_pattern, paging},
    error::Result,
    list_pager::ListSort,
    session::CustomerScope,
};

/// Customers on one page of the overview.
pub const PAGE_SIZE: i64 = 50;

/// The ORDER BY of the overview for `sort`.
fn order_by(sort: ListSort) -> &'static str {
    match sort {
        ListSort::Name => " ORDER BY t.name, t.id",
        ListSort::LastSeen => " ORDER BY last_seen ASC NULLS FIRST, t.name, t.id",
        ListSort::Queued => " ORDER BY queued DESC, t.name, t.id",
        ListSort::Failures => " ORDER BY failed DESC, t.name, t.id",
    }
}

/// A search of the overview (page and API alike).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct CustomerQuery {
    /// Part of the name or the sender mailbox.
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub sort: Option<String>,
    #[serde(default)]
    pub offset: Option<String>,
    #[serde(default)]
    pub limit: Option<String>,
}

#[derive(FromRow)]
struct Picked {
    id: Uuid,
    total: i64,
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
    let sort = ListSort::parse(search.sort.as_deref())?;
    let (offset, limit) = paging(search.offset.as_deref(), search.limit.as_deref(), PAGE_SIZE)?;
    let mut query: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT t.id, count(*) OVER () AS total");
    // The aggregates only when the sort needs them.
    match sort {
        ListSort::Name => {
            query.push(" FROM tenants t WHERE true");
        }
        ListSort::LastSeen => {
            query.push(
                ", d.last_seen FROM tenants t LEFT JOIN
                   (SELECT tenant_id, max(last_seen_at) AS last_seen FROM devices GROUP BY tenant_id) d
                   ON d.tenant_id = t.id WHERE true",
            );
        }
        ListSort::Queued | ListSort::Failures => {
            query.push(
                ", COALESCE(m.queued, 0) AS queued, COALESCE(m.failed, 0) AS failed FROM tenants t LEFT JOIN
                   (SELECT tenant_id,
                           count(*) FILTER (WHERE state IN ('queued', 'delivering')) AS queued,
                           count(*) FILTER (WHERE state = 'failed') AS failed
                      FROM messages
                     WHERE state IN ('queued', 'delivering')
                        OR (state = 'failed' AND finished_at > now() - interval '24 hours')
                     GROUP BY tenant_id) m
                   ON m.tenant_id = t.id WHERE true",
            );
        }
    }
    if let Some(assigned) = scope.only() {
        query
            .push(" AND t.id = ANY(")
            .push_bind(assigned.to_vec())
            .push(")");
    }
    if let Some(q) = search.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        let pattern = contains_pattern(q);
        query
            .push(" AND (t.name ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR t.sender_mailbox ILIKE ")
            .push_bind(pattern)
            .push(")");
    }
    query
        .push(order_by(sort))
        .push(" LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
    let picked: Vec<Picked> = query.build_query_as().fetch_all(pool).await?;
    let total = picked.first().map_or(0, |p| p.total);
    let ids: Vec<Uuid> = picked.iter().map(|p| p.id).collect();
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
