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

use mailbridge_core::store::graph_usage;
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
    // The reservation first, then the sums (which include it).
    let sums = graph_usage::charge(
        pool,
        client_id,
        &mailbox,
        cost.requests,
        cost.bytes,
        REQUEST_WINDOW,
        UPLOAD_WINDOW,
    )
    .await?;
    let (requests, bytes) = (sums.requests, sums.upload_bytes);
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
    graph_usage::correct(
        pool,
        &reservation.client_id,
        &reservation.mailbox,
        requests,
        bytes,
    )
    .await
}
