//! Graph's Outlook limits per app and mailbox, kept by all worker processes together
//! in PostgreSQL (`graph_usage`, one row per app, mailbox and minute): at most 10 000
//! requests in 10 minutes and 150 MB uploaded in 5 minutes. Every request the worker
//! makes to Graph for a mailbox counts — `sendMail`, a draft, its attachments, each
//! `PUT` to an upload session, the draft's `send` and the deletion of a failed
//! draft — with the bytes of its body.
//!
//! Before an attempt the message's requests and bytes are estimated and reserved
//! (one upsert and one sum over at most eleven rows); a message that would go over is
//! deferred without an attempt. After the attempt the reservation is corrected to
//! what was actually sent. A message whose own size is over the upload budget goes
//! only into an empty window: Graph then decides.

use std::time::Duration;

pub use mailbridge_m365::meter::{Cost, Meter, metered};
use sqlx::PgPool;

/// Microsoft's limits (Learn: Microsoft Graph throttling limits, Outlook service).
pub const REQUESTS_PER_WINDOW: i64 = 10_000;
pub const REQUEST_WINDOW: Duration = Duration::from_secs(600);
pub const UPLOAD_BYTES_PER_WINDOW: i64 = 150 * 1024 * 1024;
pub const UPLOAD_WINDOW: Duration = Duration::from_secs(300);

/// Why the budget refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Requests,
    Upload,
}

/// A reservation to be corrected to what the attempt sent.
#[derive(Debug)]
pub struct Reservation {
    client_id: String,
    mailbox: String,
    cost: Cost,
}

/// Reserves `cost` of `mailbox`'s budget for the app `client_id`, or says which
/// limit it would break.
pub async fn reserve(
    pool: &PgPool,
    client_id: &str,
    mailbox: &str,
    cost: Cost,
) -> Result<Result<Reservation, Over>, sqlx::Error> {
    let mailbox = mailbox.to_ascii_lowercase();
    // The reservation first, then the sums (which include it and any other
    // worker's made meanwhile): two workers racing for the last of a budget may both
    // step back, but never both go over.
    let (requests, bytes): (i64, i64) = sqlx::query_as(
        "WITH charged AS (
             INSERT INTO graph_usage (client_id, mailbox, minute, requests, upload_bytes)
             VALUES ($1, $2, date_trunc('minute', now()), $3, $4)
             ON CONFLICT (client_id, mailbox, minute) DO UPDATE
                SET requests = graph_usage.requests + EXCLUDED.requests,
                    upload_bytes = graph_usage.upload_bytes + EXCLUDED.upload_bytes
             RETURNING requests, upload_bytes)
         SELECT (SELECT requests FROM charged) + COALESCE((SELECT sum(requests) FROM graph_usage
                  WHERE client_id = $1 AND mailbox = $2 AND minute < date_trunc('minute', now())
                    AND minute >= date_trunc('minute', now() - $5)), 0)::bigint,
                (SELECT upload_bytes FROM charged) + COALESCE((SELECT sum(upload_bytes) FROM graph_usage
                  WHERE client_id = $1 AND mailbox = $2 AND minute < date_trunc('minute', now())
                    AND minute >= date_trunc('minute', now() - $6)), 0)::bigint",
    )
    .bind(client_id)
    .bind(&mailbox)
    .bind(cost.requests)
    .bind(cost.bytes)
    .bind(REQUEST_WINDOW)
    .bind(UPLOAD_WINDOW)
    .fetch_one(pool)
    .await?;
    let reservation = Reservation {
        client_id: client_id.to_owned(),
        mailbox,
        cost,
    };
    let over = if requests > REQUESTS_PER_WINDOW {
        Some(Over::Requests)
    } else if bytes > UPLOAD_BYTES_PER_WINDOW && bytes > cost.bytes {
        Some(Over::Upload)
    } else {
        None
    };
    match over {
        None => Ok(Ok(reservation)),
        Some(over) => {
            correct(pool, &reservation, Cost::default()).await?;
            Ok(Err(over))
        }
    }
}

/// Corrects `reservation` to what the attempt actually sent.
pub async fn settle(pool: &PgPool, reservation: Reservation, sent: Cost) {
    if let Err(e) = correct(pool, &reservation, sent).await {
        tracing::debug!(error = %e, "could not correct a Graph budget reservation");
    }
}

async fn correct(pool: &PgPool, reservation: &Reservation, sent: Cost) -> Result<(), sqlx::Error> {
    let requests = sent.requests - reservation.cost.requests;
    let bytes = sent.bytes - reservation.cost.bytes;
    if requests == 0 && bytes == 0 {
        return Ok(());
    }
    // Into the current minute: the reservation's may have passed, and the sums only
    // ever look at whole windows.
    sqlx::query(
        "INSERT INTO graph_usage (client_id, mailbox, minute, requests, upload_bytes)
         VALUES ($1, $2, date_trunc('minute', now()), $3, $4)
         ON CONFLICT (client_id, mailbox, minute) DO UPDATE
            SET requests = graph_usage.requests + EXCLUDED.requests,
                upload_bytes = graph_usage.upload_bytes + EXCLUDED.upload_bytes",
    )
    .bind(&reservation.client_id)
    .bind(&reservation.mailbox)
    .bind(requests)
    .bind(bytes)
    .execute(pool)
    .await?;
    Ok(())
}
