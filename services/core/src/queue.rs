//! The message queue in PostgreSQL: what the edge commits before it says `250`, and
//! what workers lease, deliver and settle.
//!
//! Two tables. `queue` holds what leasing needs, one narrow row per message waiting
//! or being delivered, with only the queue's two partial indexes; `messages` is the
//! message log the control plane searches, written when the message is committed
//! (`queued`) and once more when it ends. So the churn of leases and retries never
//! touches the log's indexes.
//!
//! A message is `queued` until a worker leases it (`delivering`: its queue row has an
//! owner, and its due time is the lease's expiry), then `accepted` (by Microsoft:
//! Graph's `202`, SMTP's `250` — later `bounced` if a non-delivery report comes
//! back, see `bounces`), `failed`, or `queued` again with a later due time. A lease
//! that expires (its worker died) makes the message due again, so nothing is ever
//! stranded. Settling checks the lease owner, so a worker whose lease was taken over
//! cannot overwrite the newer owner's result. A settlement deletes the queue row and
//! writes the log row in one statement: a log row is `queued` exactly while its
//! queue row exists.
//!
//! Bodies are stored sealed with the master key (they are health data, and would
//! otherwise sit in clear in PostgreSQL, its WAL and its backups), in
//! `message_bodies`: inline up to about 8 KB, in TOAST above.
//!
//! Over 500 lines: it holds the statements of the queue, the log row's commit and
//! end, the sealed bodies and the delivery attempts, from enqueue through lease and
//! settle to retry and cancel; they share the lease and state rules above.

use crate::ids::DeviceId;
use crate::ids::MessageId;
use crate::ids::TenantId;
use std::{net::IpAddr, time::Duration};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};

use crate::{
    crypto::{CryptoError, MasterKey},
    tenants::{OwnApp, Tenant},
};

/// The NOTIFY channel workers LISTEN on; the payload is the tenant id.
pub const QUEUE_CHANNEL: &str = "mailbridge_queue";

/// Where a message is in its life (`messages.state`, except `delivering`: the log
/// row stays `queued` while its queue row is leased). `accepted` is Microsoft's
/// acceptance (Graph `202`, SMTP `250`), not delivery: a non-delivery report may
/// still turn it into `bounced`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    sqlx::Type,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
    strum::Display,
    utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum MessageState {
    /// Waiting for its next attempt (its queue row's `due_at`).
    Queued,
    /// Leased by a worker, which is talking to Microsoft (read from the queue).
    Delivering,
    /// Microsoft took it.
    Accepted,
    /// Microsoft took it and later sent a non-delivery report.
    Bounced,
    /// Given up on: refused for good, expired, or cancelled.
    Failed,
}

impl MessageState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Who wrote a message.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    sqlx::Type,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum MessageKind {
    /// A device submitted it.
    Device,
    /// mailbridge wrote it (a report of an undeliverable message); never reported on.
    Notification,
    /// Staff sent it from the control plane to check a customer's path; never reported on.
    Test,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A message as the edge hands it over.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Chosen by the edge, so its trace header can name it before the commit.
    pub id: MessageId,
    pub tenant_id: TenantId,
    pub device_id: Option<DeviceId>,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub client_addr: IpAddr,
    pub tls_protocol: Option<String>,
    pub tls_cipher: Option<String>,
    pub kind: MessageKind,
    /// The Subject, for the message log (never the body).
    pub subject: Option<String>,
    pub body: Vec<u8>,
}

/// What a message body is sealed for: its message, so it cannot be swapped.
fn body_context(id: MessageId) -> String {
    format!("message-body:{id}")
}

/// Commits a message and its body (sealed with `key`) in one transaction and wakes
/// the workers. Only when this returns `Ok` may the edge answer `250`.
pub async fn enqueue(
    pool: &PgPool,
    key: &MasterKey,
    message: &NewMessage,
) -> Result<MessageId, sqlx::Error> {
    enqueue_all(pool, key, &[message]).await?;
    Ok(message.id)
}

/// Commits `messages` and their bodies in one statement — one transaction, one round
/// trip, one prepared statement whatever the number of messages — and wakes the
/// workers once per tenant: what group commit hands over.
pub async fn enqueue_all<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    key: &MasterKey,
    messages: &[&NewMessage],
) -> Result<(), sqlx::Error> {
    let sealed: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| key.seal(&body_context(m.id), &m.body))
        .collect();
    // Recipients travel newline-joined (an SMTP address cannot hold a line break):
    // arrays of arrays of different lengths do not exist in PostgreSQL.
    let recipients: Vec<String> = messages
        .iter()
        .map(|m| {
            debug_assert!(m.rcpt_to.iter().all(|r| !r.contains('\n')));
            m.rcpt_to.join("\n")
        })
        .collect();
    sqlx::query(
        "WITH queued AS (
             INSERT INTO messages (id, tenant_id, device_id, mail_from, rcpt_to, size_bytes, client_addr, tls_protocol, tls_cipher, kind, subject, message_id_header)
             SELECT id, tenant_id, device_id, mail_from, string_to_array(rcpt_to, E'\\n'), size_bytes, client_addr, tls_protocol, tls_cipher, kind, subject, message_id_header
               FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::bigint[], $7::inet[], $8::text[], $9::text[], $10::text[], $11::text[], $14::text[])
                    AS m(id, tenant_id, device_id, mail_from, rcpt_to, size_bytes, client_addr, tls_protocol, tls_cipher, kind, subject, message_id_header)
             RETURNING id, tenant_id),
         waiting AS (
             INSERT INTO queue (message_id, tenant_id) SELECT id, tenant_id FROM queued),
         bodies AS (
             INSERT INTO message_bodies (message_id, tenant_id, body, sealed)
             SELECT id, tenant_id, body, true FROM unnest($1::uuid[], $2::uuid[], $12::bytea[]) AS b(id, tenant_id, body))
         SELECT pg_notify($13, tenant_id::text) FROM (SELECT DISTINCT tenant_id FROM queued) tenants",
    )
    .bind(messages.iter().map(|m| m.id).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.tenant_id).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.device_id).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.mail_from.as_str()).collect::<Vec<_>>())
    .bind(recipients)
    .bind(messages.iter().map(|m| m.body.len() as i64).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.client_addr).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.tls_protocol.as_deref()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.tls_cipher.as_deref()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.kind.as_str()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.subject.as_deref()).collect::<Vec<_>>())
    .bind(sealed)
    .bind(QUEUE_CHANNEL)
    .bind(
        messages
            .iter()
            .map(|m| crate::message_id::find(&m.body))
            .collect::<Vec<_>>(),
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// A message a worker holds a lease on.
#[derive(Debug, Clone, FromRow)]
pub struct LeasedMessage {
    pub id: MessageId,
    pub tenant_id: TenantId,
    pub device_id: Option<DeviceId>,
    pub kind: MessageKind,
    pub subject: Option<String>,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// Including the attempt this lease is for.
    pub attempt_count: i32,
    pub received_at: DateTime<Utc>,
    /// Taken over from a worker whose lease expired (it died or hung): that worker
    /// may have handed the message to Microsoft already, so this delivery may be a
    /// duplicate.
    pub recovered: bool,
}

/// The SET list of an `UPDATE queue $q` that leases the row to `$owner` for
/// `$seconds` (SQL parameters) and counts the attempt the lease is for. A literal, so
/// that queries stay static strings.
#[macro_export]
#[doc(hidden)]
macro_rules! queue_lease {
    ($q:literal, $owner:literal, $seconds:literal) => {
        concat!(
            "lease_owner = ",
            $owner,
            ", due_at = now() + make_interval(secs => ",
            $seconds,
            ")",
            ", attempt_count = ",
            $q,
            ".attempt_count + 1"
        )
    };
}

/// The end of a lease statement whose `UPDATE queue q … FROM (…) $taken` (the
/// locked rows, with their `recovered`: leased before) is the CTE `lease`: closes
/// it, and reads each leased message's log row by its key — a join of the update
/// with `messages` let the planner scan the whole log — as [`LeasedMessage`]s, with
/// `$extra_returning` carried from the update and `$extra_select` added to them.
#[macro_export]
#[doc(hidden)]
macro_rules! lease_end {
    ($taken:literal, $extra_returning:literal, $extra_select:literal) => {
        concat!(
            " RETURNING q.message_id, q.attempt_count, ",
            $taken,
            ".recovered",
            $extra_returning,
            ")",
            " SELECT m.id, m.tenant_id, m.device_id, m.kind, m.subject, m.mail_from, m.rcpt_to,",
            " l.attempt_count, m.received_at, l.recovered",
            $extra_select,
            " FROM lease l CROSS JOIN LATERAL (SELECT * FROM messages WHERE id = l.message_id) m"
        )
    };
}

/// Graph requests at once per app and mailbox (more are refused with `429`
/// "MailboxConcurrency").
pub const GRAPH_CONCURRENCY_PER_MAILBOX: i32 = 4;
/// SMTP connections at once per mailbox (more are refused with `432 4.3.2`).
pub const SMTP_CONNECTIONS_PER_MAILBOX: i32 = 3;

/// Leases up to `limit` due messages for `lease`: every tenant's oldest due messages
/// in turn (one customer's burst of thousands cannot delay another's lab result),
/// skipping customers under a hold (of their mailbox, themselves, or their app as
/// `app` presents it: see `holds`), and no more for a tenant than its
/// sender mailbox may send at once (counting what all workers have in flight), so
/// that a burst is not leased only to wait for a slot. Messages whose previous lease
/// expired (their worker died) count as due. Concurrent workers never get the same
/// row.
///
/// So do `owner`'s own leases that are not `in_flight`: a lease the database
/// committed while its answer was lost (the connection died in that instant), or a
/// deferral that could not be written. Nothing was sent for those, and without this
/// they would wait for their lease to expire.
///
/// Only the customers with anything queued or leased are visited, found with one
/// index probe each (the recursive CTEs: a loose scan of the queue's partial
/// indexes): of hundreds of customers most have nothing waiting, and visiting every
/// one's queue made a lease cost milliseconds.
pub async fn lease_due(
    pool: &PgPool,
    owner: &str,
    limit: i64,
    lease: Duration,
    in_flight: &[MessageId],
    app: Option<&crate::holds::AppIdentity>,
) -> Result<Vec<LeasedMessage>, sqlx::Error> {
    sqlx::query_as(concat!(
        "WITH RECURSIVE
              waiting(tenant_id) AS (
                  (SELECT tenant_id FROM queue WHERE lease_owner IS NULL ORDER BY tenant_id LIMIT 1)
                  UNION ALL
                  SELECT (SELECT n.tenant_id FROM queue n
                           WHERE n.lease_owner IS NULL AND n.tenant_id > w.tenant_id
                           ORDER BY n.tenant_id LIMIT 1)
                    FROM waiting w WHERE w.tenant_id IS NOT NULL),
              leased(tenant_id) AS (
                  (SELECT tenant_id FROM queue WHERE lease_owner IS NOT NULL ORDER BY tenant_id LIMIT 1)
                  UNION ALL
                  SELECT (SELECT n.tenant_id FROM queue n
                           WHERE n.lease_owner IS NOT NULL AND n.tenant_id > l.tenant_id
                           ORDER BY n.tenant_id LIMIT 1)
                    FROM leased l WHERE l.tenant_id IS NOT NULL),
              lease AS (
         UPDATE queue q
            SET ",
        crate::queue_lease!("q", "$1", "$3"),
        "
           FROM (
                SELECT message_id, lease_owner IS NOT NULL AS recovered FROM queue
                 WHERE message_id = ANY(ARRAY(
                       SELECT due.message_id
                         FROM tenants t
                        CROSS JOIN LATERAL (
                              SELECT CASE t.delivery_method WHEN 'smtp' THEN $4 ELSE $5 END - count(*) AS room
                                FROM queue
                               WHERE tenant_id = t.id AND lease_owner IS NOT NULL AND due_at >= now()) busy
                        CROSS JOIN LATERAL (
                              SELECT d.message_id, d.due_at,
                                     row_number() OVER (ORDER BY d.due_at) AS turn
                                FROM ((SELECT message_id, due_at FROM queue
                                        WHERE tenant_id = t.id AND lease_owner IS NULL AND due_at <= now()
                                        ORDER BY due_at LIMIT $2)
                                      UNION ALL
                                      (SELECT message_id, due_at FROM queue
                                        WHERE tenant_id = t.id AND lease_owner IS NOT NULL
                                          AND (due_at < now() OR (lease_owner = $1 AND message_id <> ALL($6)))
                                        ORDER BY due_at LIMIT $2)) d
                               ORDER BY d.due_at LIMIT $2) due
                        WHERE t.id IN (SELECT tenant_id FROM waiting UNION SELECT tenant_id FROM leased)
                          AND NOT ",
        crate::tenant_held!("t", "$7", "$8"),
        " AND due.turn <= busy.room
                        ORDER BY due.turn, due.due_at
                        LIMIT $2))
                   AND ((lease_owner IS NULL AND due_at <= now())
                        OR (lease_owner IS NOT NULL
                            AND (due_at < now() OR (lease_owner = $1 AND message_id <> ALL($6)))))
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED) taken
          WHERE q.message_id = taken.message_id",
        crate::lease_end!("taken", "", "")
    ))
    .bind(owner)
    .bind(limit)
    .bind(lease.as_secs_f64())
    .bind(SMTP_CONNECTIONS_PER_MAILBOX)
    .bind(GRAPH_CONCURRENCY_PER_MAILBOX)
    .bind(in_flight)
    .bind(app.map(|a| a.client_id.as_str()))
    .bind(app.map(|a| a.credential.as_str()))
    .fetch_all(pool)
    .await
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the stored body cannot be opened: {0}")]
    Sealed(#[from] CryptoError),
}

/// The raw message as received (with our Received header), if still stored, opened
/// with `key` (a body queued before bodies were sealed is returned as stored).
pub async fn body(
    pool: &PgPool,
    key: &MasterKey,
    id: MessageId,
) -> Result<Option<Vec<u8>>, BodyError> {
    let stored = sqlx::query!(
        "SELECT body, sealed FROM message_bodies WHERE message_id = $1",
        id as MessageId
    )
    .fetch_optional(pool)
    .await?;
    Ok(match stored {
        Some(row) if row.sealed => Some(key.open(&body_context(id), &row.body)?),
        Some(row) => Some(row.body),
        None => None,
    })
}

/// What one delivery needs, read in one statement right after the lease: the
/// customer, its own app (opened), and the body (opened). The body is read here and
/// not in the lease itself, so that a lease of many messages never holds all their
/// bodies at once.
#[derive(Debug)]
pub struct DeliveryJob {
    pub tenant: Tenant,
    /// The customer's own app registration; `None`: the MSP's app serves it.
    pub own_app: Option<OwnApp>,
    /// The raw message as received; `None` when it is no longer stored.
    pub body: Option<Vec<u8>>,
}

/// The [`DeliveryJob`] of leased `message`, opened with `key`; `None` when its
/// customer is gone. (It takes the leased message, not its two ids, which a caller
/// could swap.)
pub async fn delivery_job(
    pool: &PgPool,
    key: &MasterKey,
    message: &LeasedMessage,
) -> Result<Option<DeliveryJob>, BodyError> {
    let (tenant_id, message_id) = (message.tenant_id, message.id);
    #[derive(FromRow)]
    struct Row {
        #[sqlx(flatten)]
        tenant: Tenant,
        client_secret_sealed: Option<Vec<u8>>,
        client_certificate_sealed: Option<Vec<u8>>,
        body: Option<Vec<u8>>,
        sealed: Option<bool>,
    }
    let row: Option<Row> = sqlx::query_as(concat!(
        "SELECT ",
        crate::tenants::columns!(),
        ", client_secret_sealed, client_certificate_sealed, b.body, b.sealed
           FROM tenants LEFT JOIN message_bodies b ON b.message_id = $2
          WHERE id = $1"
    ))
    .bind(tenant_id)
    .bind(message_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let own_app = match row.tenant.client_id.clone() {
        Some(client_id) => crate::tenants::open_app(
            key,
            tenant_id,
            client_id,
            row.client_secret_sealed,
            row.client_certificate_sealed,
        )?,
        None => None,
    };
    let body = match (row.body, row.sealed) {
        (Some(body), Some(true)) => Some(key.open(&body_context(message_id), &body)?),
        (body, _) => body,
    };
    Ok(Some(DeliveryJob {
        tenant: row.tenant,
        own_app,
        body,
    }))
}

/// Re-seals up to `limit` bodies not sealed with `key`'s current key (sealed with a
/// previous one, or queued in clear before bodies were sealed); returns how many.
/// Online: rows being delivered or deleted meanwhile are skipped or simply gone.
pub async fn reseal_bodies(pool: &PgPool, key: &MasterKey, limit: i64) -> Result<u64, BodyError> {
    let mut tx = pool.begin().await?;
    // The key id sits in the first bytes; bodies are stored uncompressed
    // (STORAGE EXTERNAL), so reading them does not fetch the whole body.
    let current = key.sealed_prefix();
    let rows = sqlx::query!(
        r#"SELECT message_id, body, sealed FROM message_bodies
            WHERE NOT sealed OR substring(body FROM 1 FOR $1) <> $2
            ORDER BY message_id LIMIT $3 FOR UPDATE SKIP LOCKED"#,
        current.len() as i32,
        &current,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut bodies = Vec::with_capacity(rows.len());
    for row in rows {
        let id = row.message_id;
        let plain = if row.sealed {
            key.open(&body_context(id.into()), &row.body)?
        } else {
            row.body
        };
        bodies.push(key.seal(&body_context(id.into()), &plain));
        ids.push(id);
    }
    sqlx::query!(
        "UPDATE message_bodies b SET body = n.body, sealed = true
           FROM unnest($1::uuid[], $2::bytea[]) AS n(id, body) WHERE b.message_id = n.id",
        &ids,
        &bodies
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ids.len() as u64)
}

/// What one delivery attempt came to.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    sqlx::Type,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum AttemptOutcome {
    Accepted,
    Retry,
    Permanent,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One try to hand a message to Microsoft 365, as recorded.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct DeliveryAttempt {
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub method: String,
    pub outcome: AttemptOutcome,
    /// HTTP status or SMTP reply code.
    pub upstream_status: Option<i32>,
    /// Microsoft's code: an enhanced status code, a Graph error code, an AADSTS code.
    pub upstream_code: Option<String>,
    pub upstream_message: Option<String>,
    /// What the answer meant (a `diagnosis` key).
    pub diagnosis: Option<String>,
    /// The mailbox the message was sent as (Microsoft's limits are per mailbox).
    pub mailbox: Option<String>,
    pub worker: String,
}

/// How a leased message is settled.
#[derive(Debug, Clone, Copy)]
pub enum Settlement {
    Accepted,
    RetryAt(DateTime<Utc>),
    Failed,
}

/// One attempt to settle (see [`settle_all`]).
#[derive(Debug, Clone, Copy)]
pub struct Settling<'a> {
    pub message_id: MessageId,
    pub attempt: &'a DeliveryAttempt,
    pub settlement: Settlement,
    /// A report about this message (it failed) queued in the same transaction:
    /// committed exactly when the settlement is, never lost to a crash between the
    /// two, never queued twice.
    pub report: Option<&'a NewMessage>,
    /// This settlement may have been committed already: it is tried again because
    /// the answer to an earlier try was lost (a dropped connection, a failover).
    /// Only then is the attempt looked up; a first try — nearly every settlement —
    /// skips that check, so its cost cannot grow with `delivery_attempts`.
    pub maybe_settled: bool,
}

/// Records the attempts and settles their messages, all in one statement (one
/// transaction, one round trip, one flush of the write-ahead log), each only if
/// `owner` still holds its lease. Returns, in the order given, whether each was
/// settled; false when its lease had passed to another worker (the attempt is
/// recorded all the same: it happened). A message Microsoft accepted has its body
/// deleted: it is health data and no longer needed. A delivery counts its
/// recipients against the mailbox's day (the worker's limits read it), and a
/// final state counts into the customer's usage (`usage_count`, in the same
/// transaction: never twice, never lost).
///
/// Settling again what was already settled — the same attempt of the same worker,
/// tried again because the answer to the first try was lost after its commit (a
/// connection dropped, a failover), marked [`Settling::maybe_settled`] — changes
/// nothing and counts as settled: the attempt is not recorded twice, and a lease
/// this worker has taken on the message since is left alone.
///
/// Rows are locked in one order by every settlement, so that batches cannot
/// deadlock with each other or with a customer's deletion: the queue rows first
/// (sorted by message, as `tenants::delete` locks them), then the shared counter
/// rows — the customers' hours (sorted by customer) before the mailboxes' (sorted
/// by mailbox).
///
/// Reports ([`Settling::report`], sealed with `key`) are queued in the same
/// transaction, each only if its message was settled now (not before, not by
/// another worker), by [`enqueue_reports`]: reports the database refuses do not
/// hold up their settlements. Without reports, the statement is the transaction.
pub async fn settle_all(
    pool: &PgPool,
    key: &MasterKey,
    owner: &str,
    settling: &[Settling<'_>],
) -> Result<Vec<bool>, sqlx::Error> {
    let mut tx = None;
    if settling.iter().any(|s| s.report.is_some()) {
        tx = Some(pool.begin().await?);
    }
    let settled = match tx.as_mut() {
        Some(tx) => settle_statement(&mut **tx, owner, settling).await?,
        None => settle_statement(pool, owner, settling).await?,
    };
    if let Some(mut tx) = tx {
        let reports: Vec<&NewMessage> = settling
            .iter()
            .zip(&settled)
            .filter_map(|(s, &(settled, again))| s.report.filter(|_| settled && !again))
            .collect();
        let queued = enqueue_reports(&mut tx, key, &reports).await?;
        tx.commit().await?;
        crate::metrics::metrics()
            .worker
            .notifications
            .inc_by(queued as u64);
    }
    Ok(settled.into_iter().map(|(settled, _)| settled).collect())
}

/// Queues `reports` — what mailbridge writes to a customer about a message of
/// theirs (failed, bounced) — in the caller's transaction `tx`, so that they commit
/// exactly with what they report on. In a savepoint: reports the database refuses
/// (a constraint) are left out, with a warning, rather than failing the settlement
/// or the bounce they report on, which would otherwise be tried again and again.
/// Returns how many were queued (count them once `tx` commits).
pub async fn enqueue_reports(
    tx: &mut sqlx::PgConnection,
    key: &MasterKey,
    reports: &[&NewMessage],
) -> Result<usize, sqlx::Error> {
    if reports.is_empty() {
        return Ok(0);
    }
    let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
    match enqueue_all(&mut *savepoint, key, reports).await {
        Ok(()) => {
            savepoint.commit().await?;
            Ok(reports.len())
        }
        Err(sqlx::Error::Database(e)) if e.code().is_some_and(|c| c.starts_with("23")) => {
            tracing::warn!(error = %e, reports = reports.len(), "reports refused; what they report on is kept without them");
            savepoint.rollback().await?;
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

/// The statement of [`settle_all`]: for each settlement in order, whether it was
/// settled, and whether that was already so (settled before, by this attempt).
async fn settle_statement<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    owner: &str,
    settling: &[Settling<'_>],
) -> Result<Vec<(bool, bool)>, sqlx::Error> {
    let error = |attempt: &DeliveryAttempt| match attempt.outcome {
        AttemptOutcome::Accepted => None,
        _ => Some(
            [
                attempt.upstream_code.as_deref(),
                attempt.upstream_message.as_deref(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": "),
        ),
    };
    // One array per column; the text ones borrow from the attempts.
    let text = |f: &dyn Fn(&DeliveryAttempt) -> Option<&str>| {
        settling.iter().map(|s| f(s.attempt)).collect::<Vec<_>>()
    };
    let errors: Vec<Option<String>> = settling.iter().map(|s| error(s.attempt)).collect();
    let ids: Vec<MessageId> = settling.iter().map(|s| s.message_id).collect();
    let states: Vec<&str> = settling
        .iter()
        .map(|s| match s.settlement {
            Settlement::Accepted => "accepted",
            Settlement::RetryAt(_) => "queued",
            Settlement::Failed => "failed",
        })
        .collect();
    let next_attempts: Vec<Option<DateTime<Utc>>> = settling
        .iter()
        .map(|s| match s.settlement {
            Settlement::RetryAt(at) => Some(at),
            _ => None,
        })
        .collect();
    let rows = sqlx::query!(
        r#"WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::int[], $4::text[], $5::text[],
                                  $6::int[], $7::text[], $8::text[], $9::text[], $10::text[],
                                  $11::text[], $12::timestamptz[], $13::text[], $15::bool[])
                 AS i(message_id, started_at, duration_ms, method, outcome, upstream_status,
                      upstream_code, upstream_message, diagnosis, mailbox, state, next_attempt_at,
                      error, maybe_settled)),
         prior AS (
             SELECT i.message_id FROM input i
              WHERE i.maybe_settled AND EXISTS (SELECT 1 FROM delivery_attempts a
                             WHERE a.message_id = i.message_id AND a.started_at = i.started_at
                               AND a.worker = $14)),
         locked AS (
             SELECT message_id FROM queue WHERE message_id = ANY($1) AND lease_owner = $14
                AND message_id NOT IN (SELECT message_id FROM prior)
              ORDER BY message_id FOR UPDATE),
         attempt AS (
             INSERT INTO delivery_attempts
                 (message_id, tenant_id, started_at, duration_ms, method, outcome, upstream_status, upstream_code, upstream_message, diagnosis, mailbox, worker)
             SELECT i.message_id, (SELECT m.tenant_id FROM messages m WHERE m.id = i.message_id),
                    i.started_at, i.duration_ms, i.method, i.outcome, i.upstream_status,
                    i.upstream_code, i.upstream_message, i.diagnosis, lower(i.mailbox), $14
               FROM input i WHERE i.message_id NOT IN (SELECT message_id FROM prior)),
         retried AS (
             UPDATE queue q SET due_at = i.next_attempt_at, lease_owner = NULL, last_error = i.error
               FROM input i
              WHERE q.message_id = i.message_id AND q.lease_owner = $14 AND i.state = 'queued'
                AND q.message_id IN (SELECT message_id FROM locked)
             RETURNING q.message_id),
         finished AS (
             DELETE FROM queue q USING input i
              WHERE q.message_id = i.message_id AND q.lease_owner = $14 AND i.state <> 'queued'
                AND q.message_id IN (SELECT message_id FROM locked)
             RETURNING q.message_id, q.attempt_count, i.state, i.error),
         logged AS (
             UPDATE messages m
                SET state = f.state, finished_at = now(), attempt_count = f.attempt_count, last_error = f.error
               FROM finished f WHERE m.id = f.message_id
             RETURNING m.id, m.tenant_id, m.state),
         body AS (
             DELETE FROM message_bodies WHERE message_id IN (SELECT message_id FROM finished)),
         usage AS (
             INSERT INTO mailbox_usage (mailbox, hour, recipients)
             SELECT lower(i.mailbox), date_trunc('hour', i.started_at, 'UTC'), sum(cardinality(m.rcpt_to))
               FROM input i JOIN messages m ON m.id = i.message_id
              WHERE i.outcome = 'accepted' AND i.mailbox IS NOT NULL
                AND i.message_id NOT IN (SELECT message_id FROM prior)
              GROUP BY 1, 2 ORDER BY 1, 2
             ON CONFLICT (mailbox, hour) DO UPDATE SET recipients = mailbox_usage.recipients + EXCLUDED.recipients),
         counted AS (
             SELECT l.id, usage_count(l.id, l.state) AS counted
               FROM (SELECT * FROM logged ORDER BY tenant_id, id) l)
         SELECT i.message_id AS "message_id!",
                (p.message_id IS NOT NULL OR r.message_id IS NOT NULL
                 OR coalesce(c.counted = 1, false)) AS "settled!",
                p.message_id IS NOT NULL AS "again!"
           FROM input i
           LEFT JOIN prior p ON p.message_id = i.message_id
           LEFT JOIN retried r ON r.message_id = i.message_id
           LEFT JOIN counted c ON c.id = i.message_id"#,
        &ids as &[MessageId],
        &settling.iter().map(|s| s.attempt.started_at).collect::<Vec<_>>(),
        &settling.iter().map(|s| s.attempt.duration_ms).collect::<Vec<_>>(),
        &text(&|a| Some(a.method.as_str())) as &[Option<&str>],
        &settling.iter().map(|s| s.attempt.outcome.as_str()).collect::<Vec<_>>() as &[&str],
        &settling.iter().map(|s| s.attempt.upstream_status).collect::<Vec<_>>() as &[Option<i32>],
        &text(&|a| a.upstream_code.as_deref()) as &[Option<&str>],
        &text(&|a| a.upstream_message.as_deref()) as &[Option<&str>],
        &text(&|a| a.diagnosis.as_deref()) as &[Option<&str>],
        &text(&|a| a.mailbox.as_deref()) as &[Option<&str>],
        &states as &[&str],
        &next_attempts as &[Option<DateTime<Utc>>],
        &errors as &[Option<String>],
        owner,
        &settling.iter().map(|s| s.maybe_settled).collect::<Vec<_>>()
    )
    .fetch_all(executor)
    .await?;
    let settled: std::collections::HashMap<MessageId, (bool, bool)> = rows
        .into_iter()
        .map(|row| (row.message_id.into(), (row.settled, row.again)))
        .collect();
    Ok(ids
        .iter()
        .map(|id| settled.get(id).copied().unwrap_or((false, false)))
        .collect())
}

/// A message's state as the log shows it.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct MessageStatus {
    pub id: MessageId,
    pub tenant_id: TenantId,
    pub state: MessageState,
    pub attempt_count: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// Puts a leased message back without an attempt (a limit of its mailbox would be
/// broken now): due again at `until`, its attempt count as before.
pub async fn defer(
    pool: &PgPool,
    message_id: MessageId,
    owner: &str,
    until: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query!(
        "UPDATE queue SET due_at = $3, attempt_count = attempt_count - 1, lease_owner = NULL
          WHERE message_id = $1 AND lease_owner = $2",
        message_id as MessageId,
        owner,
        until
    )
    .execute(pool)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// Message `id`'s state: from its queue row while it has one (a lease is
/// `delivering`), else from the log.
pub async fn status(pool: &PgPool, id: MessageId) -> Result<Option<MessageStatus>, sqlx::Error> {
    sqlx::query_as!(
        MessageStatus,
        r#"SELECT m.id, m.tenant_id,
                  CASE WHEN q.lease_owner IS NOT NULL THEN 'delivering' ELSE m.state END
                    AS "state!: MessageState",
                  COALESCE(q.attempt_count, m.attempt_count) AS "attempt_count!",
                  COALESCE(q.due_at, m.finished_at, m.received_at) AS "next_attempt_at!",
                  COALESCE(q.last_error, m.last_error) AS last_error
             FROM messages m LEFT JOIN queue q ON q.message_id = m.id
            WHERE m.id = $1"#,
        id as MessageId
    )
    .fetch_optional(pool)
    .await
}

impl DeliveryAttempt {
    /// What the answer meant, in plain words.
    pub fn explained(&self) -> Option<&'static crate::diagnosis::Diagnosis> {
        self.diagnosis.as_deref().and_then(crate::diagnosis::by_key)
    }
}

pub async fn attempts(pool: &PgPool, id: MessageId) -> Result<Vec<DeliveryAttempt>, sqlx::Error> {
    sqlx::query_as!(
        DeliveryAttempt,
        r#"SELECT started_at, duration_ms, method, outcome AS "outcome: AttemptOutcome",
                  upstream_status, upstream_code, upstream_message, diagnosis, mailbox, worker
             FROM delivery_attempts WHERE message_id = $1 ORDER BY started_at, id"#,
        id as MessageId
    )
    .fetch_all(pool)
    .await
}

/// Wakes the workers listening on [`QUEUE_CHANNEL`] (`reason` is for the log).
pub async fn wake_workers(pool: &PgPool, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_notify($1, $2)", QUEUE_CHANNEL, reason)
        .execute(pool)
        .await
        .map(drop)
}

/// Gives every log row still `queued` without a queue row one, due now, and wakes
/// the workers; returns how many. The edge writes both in one statement and
/// settlement removes both in one, so only an edge of the previous version (during
/// the rollout that moved the queue apart from the log) leaves such rows.
///
/// The log rows are locked (`FOR UPDATE`): when another worker adopted one after
/// this statement's snapshot and it was delivered and settled before this reaches
/// it, PostgreSQL re-checks the settled row's state and skips it — without the lock
/// it would be queued, and delivered, a second time.
pub async fn adopt_orphans(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let adopted = sqlx::query_scalar!(
        r#"WITH adopted AS (
               INSERT INTO queue (message_id, tenant_id)
               SELECT m.id, m.tenant_id FROM messages m
                WHERE m.state = 'queued'
                  AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.message_id = m.id)
                  FOR UPDATE OF m
               ON CONFLICT (message_id) DO NOTHING
               RETURNING tenant_id)
           SELECT count(*) AS "adopted!"
             FROM adopted, LATERAL pg_notify($1, tenant_id::text)"#,
        QUEUE_CHANNEL
    )
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(adopted).unwrap_or(0))
}

/// One customer's queue and connection, for the per-customer gauges.
#[derive(Debug)]
pub struct CustomerQueue {
    pub tenant_id: TenantId,
    pub name: String,
    /// Queued or being delivered.
    pub depth: i64,
    /// How long the oldest message due has waited for its attempt (a lease that
    /// expired counts from its expiry).
    pub oldest_due_seconds: f64,
    /// Connected (consent recorded) and no token refused since the last one issued.
    pub consent_ok: bool,
    /// Queued messages, or a broken consent: worth a labelled series.
    pub reports: bool,
}

/// Every customer's queue and connection.
pub async fn per_customer(pool: &PgPool) -> Result<Vec<CustomerQueue>, sqlx::Error> {
    sqlx::query_as!(
        CustomerQueue,
        r#"WITH queued AS (
               SELECT tenant_id, count(*) AS depth,
                      min(due_at) FILTER (WHERE due_at <= now()) AS oldest_due
                 FROM queue GROUP BY tenant_id
           ), tenant AS (
               SELECT t.id, t.name, COALESCE(q.depth, 0) AS depth,
                      COALESCE(EXTRACT(EPOCH FROM now() - q.oldest_due), 0)::float8
                        AS oldest_due_seconds,
                      t.entra_tenant_id IS NOT NULL
                        AND (t.consented_at IS NOT NULL OR t.last_token_ok_at IS NOT NULL)
                        AS connected,
                      t.last_token_error_at IS NOT NULL
                        AND (t.last_token_ok_at IS NULL
                             OR t.last_token_error_at > t.last_token_ok_at) AS refused
                 FROM tenants t LEFT JOIN queued q ON q.tenant_id = t.id
           )
           SELECT id AS "tenant_id!", name AS "name!", depth AS "depth!",
                  oldest_due_seconds AS "oldest_due_seconds!",
                  connected AND NOT refused AS "consent_ok!",
                  depth > 0 OR (connected AND refused) AS "reports!"
             FROM tenant"#
    )
    .fetch_all(pool)
    .await
}

/// The Graph draft an attempt of message `id` recorded (the large-message path):
/// deleted by the next attempt before it makes its own.
pub async fn graph_draft(pool: &PgPool, id: MessageId) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT graph_draft_id FROM queue WHERE message_id = $1",
        id as MessageId
    )
    .fetch_optional(pool)
    .await
    .map(Option::flatten)
}

/// Records message `id`'s Graph draft (`None`: it has none any more), if `owner`
/// still holds its lease. Whether it did: a worker whose lease passed to another
/// must not go on with the draft (the other worker delivers the message).
pub async fn set_graph_draft(
    pool: &PgPool,
    id: MessageId,
    owner: &str,
    draft: Option<&str>,
) -> Result<bool, sqlx::Error> {
    sqlx::query!(
        "UPDATE queue SET graph_draft_id = $3 WHERE message_id = $1 AND lease_owner = $2",
        id as MessageId,
        owner,
        draft
    )
    .execute(pool)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// Makes waiting message `id` due now, probes its customer's holds at once and
/// wakes the workers. Whether it was waiting (`queued`).
pub async fn retry_now(pool: &PgPool, id: MessageId) -> Result<bool, sqlx::Error> {
    let woken = sqlx::query_scalar!(
        r#"WITH m AS (UPDATE queue SET due_at = now()
                       WHERE message_id = $1 AND lease_owner IS NULL RETURNING tenant_id),
                h AS (UPDATE delivery_holds SET next_probe_at = now()
                       WHERE tenant_id IN (SELECT tenant_id FROM m) AND next_probe_at > now())
           SELECT 1 AS "woken!" FROM m, LATERAL pg_notify($2, m.tenant_id::text)"#,
        id as MessageId,
        QUEUE_CHANNEL
    )
    .fetch_optional(pool)
    .await?;
    Ok(woken.is_some())
}

/// Gives up on waiting message `id` for `reason`: it fails and its body is
/// deleted (it counts as failed in the month's usage). Whether it was waiting; one
/// being delivered right now is not.
pub async fn cancel(pool: &PgPool, id: MessageId, reason: &str) -> Result<bool, sqlx::Error> {
    let cancelled = sqlx::query_scalar!(
        r#"WITH q AS (DELETE FROM queue WHERE message_id = $1 AND lease_owner IS NULL
                       RETURNING message_id, attempt_count),
                m AS (UPDATE messages m SET state = 'failed', finished_at = now(), last_error = $2,
                                            attempt_count = q.attempt_count
                        FROM q WHERE m.id = q.message_id RETURNING m.id),
                b AS (DELETE FROM message_bodies WHERE message_id IN (SELECT id FROM m))
           SELECT id AS "id!" FROM m WHERE usage_count(id, 'failed') = 1"#,
        id as MessageId,
        reason
    )
    .fetch_optional(pool)
    .await?;
    Ok(cancelled.is_some())
}
