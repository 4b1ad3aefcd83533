//! Bounces in PostgreSQL: which sender mailboxes are watched for Microsoft's
//! non-delivery reports (NDRs) and by which worker right now (a lease per mailbox, so
//! that several workers never read one mailbox at once), the watermark up to which a
//! mailbox's reports are handled, whether Microsoft lets mailbridge read it at all,
//! and the bounces recorded per message and recipient.

use crate::ids::MessageId;
use crate::ids::TenantId;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};

use crate::queue::LeasedMessage;

/// How long after its acceptance a message can still bounce as far as the watcher
/// is concerned: Exchange gives up on a recipient after at most two days of retries.
pub const BOUNCE_WINDOW_DAYS: i32 = 7;

/// A sender mailbox claimed for one poll.
#[derive(Debug, Clone, FromRow)]
pub struct Watch {
    pub tenant_id: TenantId,
    pub mailbox: String,
    /// The newest report handled (Graph's `receivedDateTime`).
    pub watermark: Option<DateTime<Utc>>,
    /// The Graph id of the "mailbridge bounces" folder, once created.
    pub folder_id: Option<String>,
}

/// Claims up to `limit` mailboxes due for a poll, each for `lease`. Customers that
/// had a message accepted within the bounce window are watched; a changed sender
/// mailbox starts over (its own watermark and folder).
pub async fn claim_due(
    pool: &PgPool,
    owner: &str,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Watch>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO bounce_watch (tenant_id, mailbox)
         SELECT t.id, lower(t.sender_mailbox) FROM tenants t
          WHERE t.entra_tenant_id IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM bounce_watch w WHERE w.tenant_id = t.id)
            AND EXISTS (SELECT 1 FROM messages m
                         WHERE m.tenant_id = t.id AND m.state = 'accepted'
                           AND m.received_at > now() - make_interval(days => $1))
         ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(BOUNCE_WINDOW_DAYS)
    .execute(pool)
    .await?;
    sqlx::query_as(
        "UPDATE bounce_watch w
            SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2),
                watermark = CASE WHEN w.mailbox = lower(t.sender_mailbox) THEN w.watermark END,
                folder_id = CASE WHEN w.mailbox = lower(t.sender_mailbox) THEN w.folder_id END,
                mailbox = lower(t.sender_mailbox)
           FROM tenants t
          WHERE t.id = w.tenant_id AND w.tenant_id IN (
                SELECT c.tenant_id FROM bounce_watch c JOIN tenants ct ON ct.id = c.tenant_id
                 WHERE c.next_poll_at <= now()
                   AND (c.lease_expires_at IS NULL OR c.lease_expires_at < now())
                   AND ct.entra_tenant_id IS NOT NULL
                   AND EXISTS (SELECT 1 FROM messages m
                                WHERE m.tenant_id = c.tenant_id AND m.state IN ('accepted', 'bounced')
                                  AND m.received_at > now() - make_interval(days => $4))
                 ORDER BY c.next_poll_at
                 LIMIT $3
                 FOR UPDATE OF c SKIP LOCKED)
         RETURNING w.tenant_id, w.mailbox, w.watermark, w.folder_id",
    )
    .bind(owner)
    .bind(lease.as_secs_f64())
    .bind(limit)
    .bind(BOUNCE_WINDOW_DAYS)
    .fetch_all(pool)
    .await
}

/// How one poll of a mailbox ended.
#[derive(Debug, Clone)]
pub enum PollResult {
    /// The mailbox was read: reports up to `watermark` are handled.
    Read {
        watermark: Option<DateTime<Utc>>,
        folder_id: Option<String>,
    },
    /// Microsoft refused to show the mailbox (`403`): bounces are not visible.
    NotVisible { reason: String },
    /// Something else went wrong (network, throttling, a token refusal): tried
    /// again at the next poll, the visibility as it was.
    Failed,
}

/// Ends `owner`'s lease of `watch` and records the poll; the mailbox is due again
/// after `interval`.
pub async fn finish(
    pool: &PgPool,
    watch: &Watch,
    owner: &str,
    result: &PollResult,
    interval: Duration,
) -> Result<(), sqlx::Error> {
    let (visible, reason, watermark, folder) = match result {
        PollResult::Read {
            watermark,
            folder_id,
        } => (Some(true), None, *watermark, folder_id.clone()),
        PollResult::NotVisible { reason } => (Some(false), Some(reason.clone()), None, None),
        PollResult::Failed => (None, None, None, None),
    };
    sqlx::query(
        "UPDATE bounce_watch
            SET lease_owner = NULL, lease_expires_at = NULL, last_polled_at = now(),
                next_poll_at = now() + make_interval(secs => $3),
                visible = COALESCE($4, visible),
                not_visible_reason = CASE WHEN $4 IS NULL THEN not_visible_reason ELSE $5 END,
                watermark = COALESCE($6, watermark),
                folder_id = COALESCE($7, folder_id)
          WHERE tenant_id = $1 AND lease_owner = $2",
    )
    .bind(watch.tenant_id)
    .bind(owner)
    .bind(interval.as_secs_f64())
    .bind(visible)
    .bind(reason)
    .bind(watermark)
    .bind(folder)
    .execute(pool)
    .await?;
    Ok(())
}

/// One failed recipient of a non-delivery report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BouncedRecipient {
    pub recipient: String,
    /// The enhanced status code (`5.1.10`).
    pub status: String,
    /// The `Diagnostic-Code` text, if any.
    pub diagnostic_code: Option<String>,
    /// The diagnosis key (see `diagnosis::bounce`).
    pub diagnosis: String,
}

/// What recording a report came to.
#[derive(Debug)]
pub enum Recorded {
    /// No message of this customer was submitted with that Message-ID (recently).
    NoMatch,
    /// The message, and the recipients this report newly bounced (empty when the
    /// report was handled before).
    Matched {
        message: LeasedMessage,
        new: Vec<BouncedRecipient>,
    },
}

/// Records a report of `tenant_id`'s mailbox about the message submitted with
/// `message_id`: each failed recipient once, and the message `bounced`. Idempotent:
/// a report handled twice (a lease that ran out mid-poll) adds nothing. In the
/// caller's transaction `tx`, so that what follows from the bounce (the report to
/// the customer) commits with it or not at all.
pub async fn record(
    tx: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    message_id: &str,
    report_id: &str,
    reported_at: DateTime<Utc>,
    recipients: &[BouncedRecipient],
) -> Result<Recorded, sqlx::Error> {
    // A device may send the same Message-ID again and again: the newest message
    // accepted before the report, to one of the failed recipients, is the one.
    let message: Option<LeasedMessage> = sqlx::query_as(
        "SELECT id, tenant_id, device_id, kind, subject, mail_from, rcpt_to, attempt_count,
                received_at, false AS recovered
           FROM messages
          WHERE tenant_id = $1 AND message_id_header = $2 AND state IN ('accepted', 'bounced')
            AND received_at <= $3 AND received_at > $3 - make_interval(days => $5)
          ORDER BY (rcpt_to && $4::text[]) DESC, received_at DESC
          LIMIT 1
          FOR UPDATE",
    )
    .bind(tenant_id)
    .bind(message_id)
    .bind(reported_at)
    .bind(
        recipients
            .iter()
            .map(|r| r.recipient.to_ascii_lowercase())
            .collect::<Vec<_>>(),
    )
    .bind(BOUNCE_WINDOW_DAYS)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(message) = message else {
        return Ok(Recorded::NoMatch);
    };
    let mut new = Vec::new();
    for r in recipients {
        let inserted = sqlx::query(
            "INSERT INTO message_bounces (message_id, tenant_id, recipient, status, diagnostic_code, diagnosis, reported_at, report_id)
             VALUES ($1, $8, lower($2), $3, $4, $5, $6, $7)
             ON CONFLICT (message_id, recipient) DO NOTHING",
        )
        .bind(message.id)
        .bind(&r.recipient)
        .bind(&r.status)
        .bind(&r.diagnostic_code)
        .bind(&r.diagnosis)
        .bind(reported_at)
        .bind(report_id)
        .bind(message.tenant_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            new.push(r.clone());
        }
    }
    if !new.is_empty() {
        let summary = new
            .iter()
            .map(|r| {
                format!(
                    "{}: {} {}",
                    r.recipient,
                    r.status,
                    r.diagnostic_code.as_deref().unwrap_or("")
                )
                .trim()
                .to_owned()
            })
            .collect::<Vec<_>>()
            .join("; ");
        // The customer's usage counts the message as bounced once, when it first
        // bounces (Microsoft's acceptance was counted at settlement).
        sqlx::query(
            "WITH previous AS (SELECT state FROM messages WHERE id = $1),
                  marked AS (
                    UPDATE messages
                       SET state = 'bounced',
                           last_error = left(CASE WHEN state = 'bounced' AND last_error IS NOT NULL
                                                  THEN last_error || '; ' ELSE '' END || $2, 2000)
                     WHERE id = $1 RETURNING id)
             SELECT count(usage_count(marked.id, 'bounced'))
               FROM marked, previous WHERE previous.state <> 'bounced'",
        )
        .bind(message.id)
        .bind(format!("bounced: {summary}"))
        .execute(&mut *tx)
        .await?;
    }
    Ok(Recorded::Matched { message, new })
}

/// A recipient a message bounced for, as the control plane shows it.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct Bounce {
    pub recipient: String,
    pub status: String,
    pub diagnostic_code: Option<String>,
    pub diagnosis: String,
    pub reported_at: DateTime<Utc>,
}

impl Bounce {
    /// What the status code means, in plain words.
    pub fn explained(&self) -> Option<&'static crate::diagnosis::Diagnosis> {
        crate::diagnosis::by_key(&self.diagnosis)
    }
}

/// The bounces of message `id`, by recipient.
pub async fn of_message(pool: &PgPool, id: MessageId) -> Result<Vec<Bounce>, sqlx::Error> {
    sqlx::query_as(
        "SELECT recipient, status, diagnostic_code, diagnosis, reported_at
           FROM message_bounces WHERE message_id = $1 ORDER BY recipient",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

/// Whether mailbridge can see a customer's bounces.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Visibility {
    /// `None` until the mailbox was first read (or refused).
    pub visible: Option<bool>,
    pub reason: Option<String>,
    pub last_polled_at: Option<DateTime<Utc>>,
    pub bounces_found: i64,
}

/// Whether mailbridge can see the bounces of each customer (all, or `only` one)
/// whose mailbox has been watched.
pub async fn visibility(
    pool: &PgPool,
    only: Option<&[TenantId]>,
) -> Result<std::collections::HashMap<TenantId, Visibility>, sqlx::Error> {
    let rows: Vec<VisibilityRow> = sqlx::query_as(
        "SELECT tenant_id, visible, not_visible_reason, last_polled_at, bounces_found
           FROM bounce_watch WHERE ($1::uuid[] IS NULL OR tenant_id = ANY($1))",
    )
    .bind(only)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.tenant_id,
                Visibility {
                    visible: r.visible,
                    reason: r.not_visible_reason,
                    last_polled_at: r.last_polled_at,
                    bounces_found: r.bounces_found,
                },
            )
        })
        .collect())
}

#[derive(FromRow)]
struct VisibilityRow {
    tenant_id: TenantId,
    visible: Option<bool>,
    not_visible_reason: Option<String>,
    last_polled_at: Option<DateTime<Utc>>,
    bounces_found: i64,
}

/// Counts `n` bounces found in `tenant_id`'s mailbox.
pub async fn count_found(pool: &PgPool, tenant_id: TenantId, n: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE bounce_watch SET bounces_found = bounces_found + $2 WHERE tenant_id = $1")
        .bind(tenant_id)
        .bind(n)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records the Message-ID a message was sent with, when the worker had to add one
/// (a message queued before the edge added them).
pub async fn set_message_id(
    pool: &PgPool,
    id: MessageId,
    message_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE messages SET message_id_header = $2 WHERE id = $1")
        .bind(id)
        .bind(message_id)
        .execute(pool)
        .await?;
    Ok(())
}
