//! Which customers a page of the overview shows: those a member sees, matching the
//! search, sorted (the aggregates joined only when the sort needs them), with the
//! count of all that match on every row.

use crate::ids::TenantId;
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::{ListSort, contains_pattern};

/// A search of the overview, its values checked already.
#[derive(Debug, Default)]
pub struct Search<'a> {
    /// Only these customers (a member limited to some); `None`: all.
    pub seen: Option<&'a [TenantId]>,
    /// Part of the name or the sender mailbox.
    pub q: Option<&'a str>,
}

/// The ORDER BY of the overview for `sort`.
fn order_by(sort: ListSort) -> &'static str {
    match sort {
        ListSort::Name => " ORDER BY t.name, t.id",
        ListSort::LastSeen => " ORDER BY last_seen ASC NULLS FIRST, t.name, t.id",
        ListSort::Queued => " ORDER BY queued DESC, t.name, t.id",
        ListSort::Failures => " ORDER BY failed DESC, t.name, t.id",
    }
}

/// The conditions on `tenants t` for `search`.
fn filter(query: &mut QueryBuilder<Postgres>, search: &Search<'_>) {
    if let Some(seen) = search.seen {
        query
            .push(" AND t.id = ANY(")
            .push_bind(seen.to_vec())
            .push(")");
    }
    if let Some(q) = search.q {
        let pattern = contains_pattern(q);
        query
            .push(" AND (t.name ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR t.sender_mailbox ILIKE ")
            .push_bind(pattern)
            .push(")");
    }
}

/// A customer picked for the page, and how many match in all.
#[derive(Debug, sqlx::FromRow)]
pub struct Picked {
    pub id: TenantId,
    pub total: i64,
}

/// The customers of one page: `limit` from `offset` in `sort`'s order.
pub async fn pick(
    pool: &PgPool,
    search: &Search<'_>,
    sort: ListSort,
    offset: i64,
    limit: i64,
) -> Result<Vec<Picked>, sqlx::Error> {
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
                           count(*) FILTER (WHERE state = 'queued') AS queued,
                           count(*) FILTER (WHERE state = 'failed') AS failed
                      FROM messages
                     WHERE state = 'queued'
                        OR (state = 'failed' AND finished_at > now() - interval '24 hours')
                     GROUP BY tenant_id) m
                   ON m.tenant_id = t.id WHERE true",
            );
        }
    }
    filter(&mut query, search);
    super::page_window(&mut query, order_by(sort), offset, limit);
    query.build_query_as().fetch_all(pool).await
}

/// How many customers match `search`.
pub async fn count(pool: &PgPool, search: &Search<'_>) -> Result<i64, sqlx::Error> {
    let mut count = QueryBuilder::new("SELECT count(*) FROM tenants t WHERE true");
    filter(&mut count, search);
    count.build_query_scalar().fetch_one(pool).await
}
