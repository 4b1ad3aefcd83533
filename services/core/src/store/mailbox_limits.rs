//! What a mailbox has used of Microsoft's limits, read in one round trip when a
//! delivery asks to go (`mailbox_usage`, `delivery_attempts` and the mailbox's
//! concurrency slots, which are transaction-scoped advisory locks). The worker's
//! `limits` decides what the answer means.

use sqlx::PgConnection;

/// The answer of [`admission`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Recipients sent as the mailbox in the hourly buckets that overlap the last
    /// 24 hours (a little conservative).
    pub recipients_today: i64,
    /// SMTP deliveries started as the mailbox in the last minute, counted up to the
    /// cap asked for (0 when not asked).
    pub smtp_last_minute: i64,
    /// The slot taken, if one was free; it is held until the transaction ends.
    pub slot: Option<i32>,
}

/// Reads `mailbox`'s (lower-cased) usage and takes the first free of `slots` slots
/// of `slot_scope`, all inside the caller's transaction: the filter takes the locks
/// in order and the LIMIT stops at the first one taken. A slot taken for a message
/// that has to wait is released with the transaction. `smtp_cap` counts the last
/// minute's SMTP deliveries up to it; `None` skips that count.
pub async fn admission(
    transaction: &mut PgConnection,
    mailbox: &str,
    smtp_cap: Option<i64>,
    slot_scope: &str,
    slots: i32,
) -> Result<Admission, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT (SELECT COALESCE(sum(recipients), 0)::bigint FROM mailbox_usage
                    WHERE mailbox = $1 AND hour > now() - interval '25 hours') AS "recipients_today!",
                  CASE WHEN $2::bigint IS NULL THEN 0::bigint ELSE (SELECT count(*) FROM (
                       SELECT 1 FROM delivery_attempts
                        WHERE mailbox = $1 AND method = 'smtp' AND started_at > now() - interval '1 minute'
                        LIMIT $2) recent) END AS "smtp_last_minute!",
                  (SELECT slot FROM generate_series(0, $4 - 1) AS slot
                    WHERE pg_try_advisory_xact_lock(hashtext($3), slot) LIMIT 1) AS slot"#,
        mailbox,
        smtp_cap,
        slot_scope,
        slots
    )
    .fetch_one(transaction)
    .await?;
    Ok(Admission {
        recipients_today: row.recipients_today,
        smtp_last_minute: row.smtp_last_minute,
        slot: row.slot,
    })
}
