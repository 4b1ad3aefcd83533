//! Usage: what each customer's devices sent, as aggregates that outlive the message
//! records — per customer and hour (the last two days), per customer and day (for
//! good), and the devices active in each month. Counted when a message reaches its
//! final state, by the SQL function `usage_count` inside the settling statement (one
//! upsert of the customer's hour per settlement, in the settlement's transaction, so
//! two workers or a crash can neither double nor lose a count). The purge rolls the
//! hours older than two days into days. The monthly report, its CSV and the charts
//! read from here.

use crate::ids::TenantId;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

/// Hours are kept this long before they become days (the 24-hour chart's span,
/// with room for a late settlement).
pub const HOURS_KEPT: &str = "2 days";

/// One customer's counts over a span.
#[derive(Debug, Clone, Default, Serialize, FromRow, PartialEq, Eq, utoipa::ToSchema)]
pub struct Counts {
    /// Device messages mailbridge accepted and settled.
    pub accepted: i64,
    /// Of those, handed to Microsoft 365 and accepted there.
    pub accepted_by_microsoft: i64,
    /// Accepted by Microsoft, then returned as undeliverable.
    pub bounced: i64,
    /// Refused for good, expired, or cancelled.
    pub failed: i64,
    pub recipients: i64,
    pub bytes: i64,
}

/// A customer's line of the monthly report.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct MonthLine {
    pub customer_id: Uuid,
    pub customer: String,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub counts: Counts,
    pub active_devices: i64,
}

/// A calendar month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Month(pub NaiveDate);

impl Month {
    pub fn current() -> Self {
        Self::of(Utc::now().date_naive())
    }

    pub fn of(day: NaiveDate) -> Self {
        Self(day.with_day(1).expect("day 1 exists"))
    }

    /// `YYYY-MM`.
    pub fn parse(text: &str) -> Option<Self> {
        let (y, m) = text.trim().split_once('-')?;
        if y.len() != 4 || m.len() != 2 {
            return None;
        }
        NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, 1).map(Self)
    }

    pub fn first_day(self) -> NaiveDate {
        self.0
    }

    pub fn next(self) -> Self {
        Self(
            self.0
                .checked_add_months(chrono::Months::new(1))
                .expect("in range"),
        )
    }

    pub fn previous(self) -> Self {
        Self(
            self.0
                .checked_sub_months(chrono::Months::new(1))
                .expect("in range"),
        )
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m"))
    }
}

/// Hours and days together, for a span of whole UTC days [from, to).
const SPAN: &str = "
    SELECT tenant_id, accepted, accepted_by_microsoft, bounced, failed, recipients, bytes
      FROM usage_days WHERE day >= $1 AND day < $2
    UNION ALL
    SELECT tenant_id, accepted, accepted_by_microsoft, bounced, failed, recipients, bytes
      FROM usage_hours WHERE hour >= ($1::date)::timestamp AT TIME ZONE 'UTC'
                         AND hour < ($2::date)::timestamp AT TIME ZONE 'UTC'";

/// The report for `month`: every customer in `only` (all when `None`), with zero
/// lines for customers that sent nothing, by name.
pub async fn month_report(
    pool: &PgPool,
    month: Month,
    only: Option<&[TenantId]>,
) -> Result<Vec<MonthLine>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH span AS ({SPAN}),
              sums AS (SELECT tenant_id,
                              sum(accepted)::bigint AS accepted,
                              sum(accepted_by_microsoft)::bigint AS accepted_by_microsoft,
                              sum(bounced)::bigint AS bounced, sum(failed)::bigint AS failed,
                              sum(recipients)::bigint AS recipients, sum(bytes)::bigint AS bytes
                         FROM span GROUP BY tenant_id),
              active AS (SELECT tenant_id, count(*) AS active_devices FROM usage_devices
                          WHERE month = $1 GROUP BY tenant_id)
         SELECT t.id AS customer_id, t.name AS customer,
                coalesce(s.accepted, 0) AS accepted,
                coalesce(s.accepted_by_microsoft, 0) AS accepted_by_microsoft,
                coalesce(s.bounced, 0) AS bounced, coalesce(s.failed, 0) AS failed,
                coalesce(s.recipients, 0) AS recipients, coalesce(s.bytes, 0) AS bytes,
                coalesce(a.active_devices, 0) AS active_devices
           FROM tenants t
           LEFT JOIN sums s ON s.tenant_id = t.id
           LEFT JOIN active a ON a.tenant_id = t.id
          WHERE ($3::uuid[] IS NULL OR t.id = ANY($3))
          ORDER BY lower(t.name)"
    )))
    .bind(month.first_day())
    .bind(month.next().first_day())
    .bind(only.map(<[TenantId]>::to_vec))
    .fetch_all(pool)
    .await
}

/// One bar of a chart: the start of its hour or day, and what was counted in it.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub accepted: i64,
    pub accepted_by_microsoft: i64,
    pub bounced: i64,
    pub failed: i64,
}

/// The last 24 hours by hour (24 buckets, the current hour last), for one customer
/// or (`None`) all of `only`.
pub async fn last_day(
    pool: &PgPool,
    tenant: Option<TenantId>,
    only: Option<&[TenantId]>,
) -> Result<Vec<Bucket>, sqlx::Error> {
    sqlx::query_as!(
        Bucket,
        r#"SELECT g.start AS "start!",
                  coalesce(sum(u.accepted), 0)::bigint AS "accepted!",
                  coalesce(sum(u.accepted_by_microsoft), 0)::bigint AS "accepted_by_microsoft!",
                  coalesce(sum(u.bounced), 0)::bigint AS "bounced!",
                  coalesce(sum(u.failed), 0)::bigint AS "failed!"
             FROM generate_series(date_trunc('hour', now(), 'UTC') - interval '23 hours',
                                  date_trunc('hour', now(), 'UTC'), interval '1 hour') AS g(start)
             LEFT JOIN usage_hours u ON u.hour = g.start
                  AND ($1::uuid IS NULL OR u.tenant_id = $1)
                  AND ($2::uuid[] IS NULL OR u.tenant_id = ANY($2))
            GROUP BY g.start ORDER BY g.start"#,
        tenant as Option<TenantId>,
        only as Option<&[TenantId]>
    )
    .fetch_all(pool)
    .await
}

/// The last 30 days by UTC day (30 buckets, today last), from days and the hours
/// not yet rolled up.
pub async fn last_month(
    pool: &PgPool,
    tenant: Option<TenantId>,
    only: Option<&[TenantId]>,
) -> Result<Vec<Bucket>, sqlx::Error> {
    sqlx::query_as!(
        Bucket,
        r#"WITH counted AS (
             SELECT day, tenant_id, accepted, accepted_by_microsoft, bounced, failed FROM usage_days
              WHERE day > (now() AT TIME ZONE 'UTC')::date - 30
             UNION ALL
             SELECT (hour AT TIME ZONE 'UTC')::date, tenant_id, accepted, accepted_by_microsoft, bounced, failed
               FROM usage_hours)
         SELECT (g.day::timestamp AT TIME ZONE 'UTC') AS "start!",
                coalesce(sum(c.accepted), 0)::bigint AS "accepted!",
                coalesce(sum(c.accepted_by_microsoft), 0)::bigint AS "accepted_by_microsoft!",
                coalesce(sum(c.bounced), 0)::bigint AS "bounced!",
                coalesce(sum(c.failed), 0)::bigint AS "failed!"
           FROM generate_series((now() AT TIME ZONE 'UTC')::date - 29,
                                (now() AT TIME ZONE 'UTC')::date, interval '1 day') AS g(day)
           LEFT JOIN counted c ON c.day = g.day::date
                AND ($1::uuid IS NULL OR c.tenant_id = $1)
                AND ($2::uuid[] IS NULL OR c.tenant_id = ANY($2))
          GROUP BY g.day ORDER BY g.day"#,
        tenant as Option<TenantId>,
        only as Option<&[TenantId]>
    )
    .fetch_all(pool)
    .await
}

/// Rolls the hours older than [`HOURS_KEPT`] into their days, in one statement (a
/// crash leaves either both or neither). Returns the hours rolled up.
pub async fn roll_up(pool: &PgPool) -> Result<u64, sqlx::Error> {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
        "WITH old AS (
             DELETE FROM usage_hours WHERE hour < now() - interval '{HOURS_KEPT}'
             RETURNING tenant_id, hour, accepted, accepted_by_microsoft, bounced, failed, recipients, bytes),
         days AS (
             INSERT INTO usage_days AS d (tenant_id, day, accepted, accepted_by_microsoft, bounced, failed, recipients, bytes)
             SELECT tenant_id, (hour AT TIME ZONE 'UTC')::date, sum(accepted), sum(accepted_by_microsoft),
                    sum(bounced), sum(failed), sum(recipients), sum(bytes)
               FROM old GROUP BY 1, 2
             ON CONFLICT (tenant_id, day) DO UPDATE
                SET accepted = d.accepted + EXCLUDED.accepted,
                    accepted_by_microsoft = d.accepted_by_microsoft + EXCLUDED.accepted_by_microsoft,
                    bounced = d.bounced + EXCLUDED.bounced, failed = d.failed + EXCLUDED.failed,
                    recipients = d.recipients + EXCLUDED.recipients, bytes = d.bytes + EXCLUDED.bytes)
         SELECT count(*) FROM old"
    )))
    .fetch_one(pool)
    .await
    .map(|n| n as u64)
}

/// The report as CSV (UTF-8, comma-separated, a header line; customer names quoted).
pub fn csv(month: Month, lines: &[MonthLine]) -> String {
    let mut out = String::from(
        "month,customer_id,customer,accepted,accepted_by_microsoft,bounced,failed,recipients,bytes,active_devices\r\n",
    );
    for l in lines {
        let c = &l.counts;
        out.push_str(&format!(
            "{month},{},{},{},{},{},{},{},{},{}\r\n",
            l.customer_id,
            csv_field(&l.customer),
            c.accepted,
            c.accepted_by_microsoft,
            c.bounced,
            c.failed,
            c.recipients,
            c.bytes,
            l.active_devices
        ));
    }
    out
}

/// A CSV field, quoted; a leading formula character is neutralised (spreadsheets
/// would run `=…` as a formula).
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    format!("\"{}\"", text.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_and_step() {
        let m = Month::parse("2026-12").unwrap();
        assert_eq!(m.to_string(), "2026-12");
        assert_eq!(m.next().to_string(), "2027-01");
        assert_eq!(m.previous().to_string(), "2026-11");
        assert!(Month::parse("2026-13").is_none());
        assert!(Month::parse("26-1").is_none());
        assert!(Month::parse("december").is_none());
    }

    #[test]
    fn csv_quotes_names_and_defuses_formulas() {
        assert_eq!(csv_field("Praxis \"Kühn\""), "\"Praxis \"\"Kühn\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "\"'=HYPERLINK(1)\"");
    }
}
