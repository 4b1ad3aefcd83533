//! Graph's Outlook budget per app and mailbox (`graph_usage`, one row per app,
//! mailbox and minute), shared by all worker processes: the reservation before an
//! attempt and its correction after it. The worker's `graph_budget` decides what the
//! sums mean; this module only counts.

use std::time::Duration;

use sqlx::PgPool;

/// The window sums a reservation answers with, its own charge included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSums {
    /// Requests in the request window.
    pub requests: i64,
    /// Bytes uploaded in the upload window.
    pub upload_bytes: i64,
}

/// Charges `requests` and `upload_bytes` to the current minute of `client_id` and
/// `mailbox` (lower-cased by the caller) and answers the sums over the two windows,
/// the charge and any other worker's made meanwhile included: two workers racing for
/// the last of a budget may both step back, but never both go over.
pub async fn charge(
    pool: &PgPool,
    client_id: &str,
    mailbox: &str,
    requests: i64,
    upload_bytes: i64,
    request_window: Duration,
    upload_window: Duration,
) -> Result<WindowSums, sqlx::Error> {
    let sums = sqlx::query!(
        r#"WITH charged AS (
             INSERT INTO graph_usage (client_id, mailbox, minute, requests, upload_bytes)
             VALUES ($1, $2, date_trunc('minute', now()), $3, $4)
             ON CONFLICT (client_id, mailbox, minute) DO UPDATE
                SET requests = graph_usage.requests + EXCLUDED.requests,
                    upload_bytes = graph_usage.upload_bytes + EXCLUDED.upload_bytes
             RETURNING requests, upload_bytes)
         SELECT ((SELECT requests FROM charged) + COALESCE((SELECT sum(requests) FROM graph_usage
                  WHERE client_id = $1 AND mailbox = $2 AND minute < date_trunc('minute', now())
                    AND minute >= date_trunc('minute', now() - make_interval(secs => $5))), 0))::bigint
                  AS "requests!",
                ((SELECT upload_bytes FROM charged) + COALESCE((SELECT sum(upload_bytes) FROM graph_usage
                  WHERE client_id = $1 AND mailbox = $2 AND minute < date_trunc('minute', now())
                    AND minute >= date_trunc('minute', now() - make_interval(secs => $6))), 0))::bigint
                  AS "upload_bytes!""#,
        client_id,
        mailbox,
        requests,
        upload_bytes,
        request_window.as_secs_f64(),
        upload_window.as_secs_f64()
    )
    .fetch_one(pool)
    .await?;
    Ok(WindowSums {
        requests: sums.requests,
        upload_bytes: sums.upload_bytes,
    })
}

/// Adds `requests` and `upload_bytes` (negative to give back) to the current minute:
/// a reservation's minute may have passed, and the sums only ever look at whole
/// windows.
pub async fn correct(
    pool: &PgPool,
    client_id: &str,
    mailbox: &str,
    requests: i64,
    upload_bytes: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO graph_usage (client_id, mailbox, minute, requests, upload_bytes)
         VALUES ($1, $2, date_trunc('minute', now()), $3, $4)
         ON CONFLICT (client_id, mailbox, minute) DO UPDATE
            SET requests = graph_usage.requests + EXCLUDED.requests,
                upload_bytes = graph_usage.upload_bytes + EXCLUDED.upload_bytes",
        client_id,
        mailbox,
        requests,
        upload_bytes
    )
    .execute(pool)
    .await
    .map(drop)
}
